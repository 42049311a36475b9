//! Event listener registry, safe against re-entrancy: dispatch takes a snapshot under a short borrow and calls
//! out with no borrow held, so a listener may add or remove listeners (itself included) or trigger another
//! dispatch; a failing listener does not stop the others.

use std::cell::RefCell;

/// The key `on(handler)` registers under: every event.
pub const ALL_EVENTS: &str = "all";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ListenerId(u64);

#[derive(Debug)]
struct Entry<L> {
    id: ListenerId,
    /// `None` for listeners of every event.
    event_type: Option<String>,
    listener: L,
}

#[derive(Debug)]
pub struct Listeners<L> {
    next_id: u64,
    entries: Vec<Entry<L>>,
}

impl<L> Default for Listeners<L> {
    fn default() -> Self {
        Listeners {
            next_id: 0,
            entries: Vec::new(),
        }
    }
}

impl<L: Clone> Listeners<L> {
    /// Registers `listener` for `event_type` (`None` or `"all"`: every event).
    pub fn add(&mut self, event_type: Option<&str>, listener: L) -> ListenerId {
        self.next_id += 1;
        let id = ListenerId(self.next_id);
        let event_type = event_type.filter(|t| *t != ALL_EVENTS).map(String::from);
        self.entries.push(Entry {
            id,
            event_type,
            listener,
        });
        id
    }

    pub fn remove(&mut self, id: ListenerId) -> bool {
        let before = self.entries.len();
        self.entries.retain(|e| e.id != id);
        before != self.entries.len()
    }

    /// Removes every registration of a listener for `event_type` that `matches` accepts (`off(type, handler)`).
    pub fn remove_matching(
        &mut self,
        event_type: Option<&str>,
        matches: impl Fn(&L) -> bool,
    ) -> usize {
        let event_type = event_type.filter(|t| *t != ALL_EVENTS);
        let before = self.entries.len();
        self.entries
            .retain(|e| !(e.event_type.as_deref() == event_type && matches(&e.listener)));
        before - self.entries.len()
    }

    pub fn contains(&self, id: ListenerId) -> bool {
        self.entries.iter().any(|e| e.id == id)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn clear(&mut self) {
        self.entries.clear();
    }

    /// The listeners an event of `event_type` goes to, in call order: listeners of every event first, then the
    /// ones registered for this type, each group in registration order.
    pub fn snapshot(&self, event_type: &str) -> Vec<(ListenerId, L)> {
        let all = self.entries.iter().filter(|e| e.event_type.is_none());
        let typed = self
            .entries
            .iter()
            .filter(|e| e.event_type.as_deref() == Some(event_type));
        all.chain(typed)
            .map(|e| (e.id, e.listener.clone()))
            .collect()
    }
}

/// Calls every listener of `event_type` with `event`. Listeners removed by an earlier listener of the same
/// dispatch are skipped; listeners added during it wait for the next event. Returns the failures, in order.
pub fn dispatch<L: Clone, E: ?Sized, F>(
    registry: &RefCell<Listeners<L>>,
    event_type: &str,
    event: &E,
    mut call: impl FnMut(&L, &E) -> Result<(), F>,
) -> Vec<F> {
    let snapshot = registry.borrow().snapshot(event_type);
    let mut failures = Vec::new();
    let single = snapshot.len() == 1;
    for (id, listener) in snapshot {
        if !single && !registry.borrow().contains(id) {
            continue;
        }
        if let Err(failure) = call(&listener, event) {
            failures.push(failure);
        }
    }
    failures
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::rc::Rc;

    type Handler = Rc<dyn Fn(&str) -> Result<(), String>>;

    fn handler(f: impl Fn(&str) -> Result<(), String> + 'static) -> Handler {
        Rc::new(f)
    }

    fn run(registry: &RefCell<Listeners<Handler>>, event: &str) -> Vec<String> {
        dispatch(registry, event, event, |h, e| h(e))
    }

    #[test]
    fn all_listeners_first_then_typed_in_registration_order() {
        let log = Rc::new(RefCell::new(Vec::new()));
        let registry = RefCell::new(Listeners::<Handler>::default());
        for (name, ty) in [
            ("typed-1", Some("user.presence.changed")),
            ("all-1", None),
            ("other", Some("health.check")),
            ("typed-2", Some("user.presence.changed")),
            ("all-2", Some("all")),
        ] {
            let log = log.clone();
            registry.borrow_mut().add(
                ty,
                handler(move |_| {
                    log.borrow_mut().push(name);
                    Ok(())
                }),
            );
        }
        run(&registry, "user.presence.changed");
        assert_eq!(*log.borrow(), ["all-1", "all-2", "typed-1", "typed-2"]);
    }

    #[test]
    fn a_failing_listener_does_not_stop_the_others() {
        let calls = Rc::new(RefCell::new(0));
        let registry = RefCell::new(Listeners::<Handler>::default());
        registry
            .borrow_mut()
            .add(None, handler(|_| Err("boom".to_string())));
        let c = calls.clone();
        registry.borrow_mut().add(
            None,
            handler(move |_| {
                *c.borrow_mut() += 1;
                Ok(())
            }),
        );
        let failures = run(&registry, "x");
        assert_eq!(failures, ["boom"]);
        assert_eq!(*calls.borrow(), 1);
    }

    #[test]
    fn listeners_may_add_remove_and_dispatch_from_inside_a_dispatch() {
        let registry = Rc::new(RefCell::new(Listeners::<Handler>::default()));
        let log = Rc::new(RefCell::new(Vec::<String>::new()));

        // A listener that unsubscribes itself, adds a new listener, removes a later one and re-dispatches.
        let victim_id = Rc::new(RefCell::new(None));
        let self_id = Rc::new(RefCell::new(None));
        let (r, l, v, s) = (
            registry.clone(),
            log.clone(),
            victim_id.clone(),
            self_id.clone(),
        );
        let first = registry.borrow_mut().add(
            Some("a"),
            handler(move |e| {
                l.borrow_mut().push(format!("first:{e}"));
                if let Some(id) = *s.borrow() {
                    r.borrow_mut().remove(id);
                }
                if let Some(id) = *v.borrow() {
                    r.borrow_mut().remove(id);
                }
                let l2 = l.clone();
                r.borrow_mut().add(
                    Some("a"),
                    handler(move |e| {
                        l2.borrow_mut().push(format!("added:{e}"));
                        Ok(())
                    }),
                );
                run(&r, "b");
                Ok(())
            }),
        );
        *self_id.borrow_mut() = Some(first);
        let l = log.clone();
        let victim = registry.borrow_mut().add(
            Some("a"),
            handler(move |e| {
                l.borrow_mut().push(format!("victim:{e}"));
                Ok(())
            }),
        );
        *victim_id.borrow_mut() = Some(victim);
        let l = log.clone();
        registry.borrow_mut().add(
            Some("b"),
            handler(move |e| {
                l.borrow_mut().push(format!("b:{e}"));
                Ok(())
            }),
        );

        run(&registry, "a");
        assert_eq!(
            *log.borrow(),
            ["first:a", "b:b"],
            "removed victim skipped, added one waits"
        );
        log.borrow_mut().clear();
        run(&registry, "a");
        assert_eq!(*log.borrow(), ["added:a"], "first unsubscribed itself");
    }

    #[test]
    fn remove_matching_removes_only_that_type() {
        let mut registry = Listeners::<u32>::default();
        registry.add(Some("a"), 1);
        registry.add(Some("b"), 1);
        registry.add(None, 1);
        assert_eq!(registry.remove_matching(Some("a"), |l| *l == 1), 1);
        assert_eq!(registry.remove_matching(Some("all"), |l| *l == 1), 1);
        assert_eq!(registry.len(), 1);
        assert_eq!(registry.snapshot("b").len(), 1);
    }
}
