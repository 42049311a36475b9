//! What the socket's handler (`frames.js`) hands over for one frame: the event object, with the strings the
//! session decides on written into the module's memory and copied into reused strings, read through the core's
//! [`crate::core::wire`] traits so that [`Frame::decode`] applies the core's rules. A frame whose strings do not
//! fit is read from the event instead.

use std::cell::Cell;

use wasm_bindgen::JsCast;
use wasm_bindgen::JsValue;

use crate::core::{Frame, Millis, UserPresence, WireEvent, WireUser};
use crate::web::js::Wire;

/// The hand-off layout (flags, header slots), derived by build.rs from `frames.js`, where it is defined.
mod layout {
    include!(concat!(env!("OUT_DIR"), "/frame_layout.rs"));
}
use layout::{
    CONNECTION_ID, COUNT_AT, ENDS_AT, ERROR, FLAGS_AT, HEADER_LENGTH, ID, LAST_ACTIVE, MAX_EVENTS,
    ME, ONLINE, RECORDS_AT, RECORD_LENGTH, STATUS, TIME_AT, TOO_LONG, USER,
};

const _: () = assert!(HEADER_LENGTH == RECORDS_AT + MAX_EVENTS * RECORD_LENGTH);

/// Bytes of the buffer the handler writes the strings of a call's events into (a batch's events share it, more
/// calls when they do not fit); an event whose strings alone do not fit is read from the event object.
const SCRATCH_BYTES: usize = 4096;
/// Strings kept for reuse: an event takes at most five.
const SPARE_STRINGS: usize = 8;

/// The `user` of a frame as the handler read it. Each field is handed over (moved) to the one decoding that reads
/// it: the core keeps the strings without copying them again.
pub struct ReadUser {
    id: Cell<Option<String>>,
    status: Cell<Option<String>>,
    last_active: Cell<Option<String>>,
    online: bool,
}

/// A user object of a frame: the `user` read by the handler, or another (`me`, or any when the strings did not
/// fit) read through the event.
pub enum FrameUser<'a> {
    Read(&'a ReadUser),
    Object(Wire),
}

impl WireUser for FrameUser<'_> {
    fn id(&self) -> Option<String> {
        match self {
            FrameUser::Read(user) => user.id.take(),
            FrameUser::Object(user) => user.id(),
        }
    }

    fn online(&self) -> Option<bool> {
        match self {
            FrameUser::Read(user) => Some(user.online),
            FrameUser::Object(user) => user.online(),
        }
    }

    fn status(&self) -> Option<String> {
        match self {
            FrameUser::Read(user) => user.status.take(),
            FrameUser::Object(user) => user.status(),
        }
    }

    fn last_active(&self) -> Option<String> {
        match self {
            FrameUser::Read(user) => user.last_active.take(),
            FrameUser::Object(user) => user.last_active(),
        }
    }
}

/// One parsed frame: the JS event and the fields its [`Frame`] reads.
pub struct Inbound {
    event: JsValue,
    kind: String,
    connection_id: Option<String>,
    /// `None` without a `user` object, or when its strings are read from the event (`TOO_LONG`).
    user: Option<ReadUser>,
    flags: u32,
}

/// What the socket's handler reads frames with: the buffer it writes their strings into, and strings of earlier
/// frames to copy them into, so that a frame allocates nothing once those have grown to fit.
pub struct FrameReader {
    /// The count of events handed over, the time, and each event's flags and where its strings start and end.
    header: Vec<f64>,
    scratch: Vec<u8>,
    spare: Vec<String>,
}

impl FrameReader {
    pub fn new() -> Self {
        FrameReader {
            header: vec![0.0; HEADER_LENGTH as usize],
            scratch: vec![0; SCRATCH_BYTES],
            spare: Vec::new(),
        }
    }

    /// Where the handler writes, as addresses in the module's memory: the header, the string buffer and its
    /// length. Neither moves (they are never resized).
    pub fn buffers(&mut self) -> (u32, u32, u32) {
        (
            self.header.as_mut_ptr() as u32,
            self.scratch.as_mut_ptr() as u32,
            self.scratch.len() as u32,
        )
    }

    /// The time the handler wrote with the last frame.
    pub fn now(&self) -> Millis {
        self.header[TIME_AT as usize] as Millis
    }

    /// How many events the handler has just handed over (at most `MAX_EVENTS`).
    pub fn count(&self) -> u32 {
        (self.header[COUNT_AT as usize] as u32).min(MAX_EVENTS)
    }

    /// Event `index` of those the handler has just written: its record holds its flags and where the strings of
    /// `type`, `user.id`, `user.status`, `user.last_active` and `connection_id` end in the buffer, each starting
    /// where the one before ends, the first where the record before ends (an absent one is empty). `None` only
    /// for an event without a string `type`, which the handler never passes.
    pub fn read(&mut self, index: u32, event: JsValue) -> Option<Inbound> {
        let index = index.min(MAX_EVENTS - 1);
        let record = (RECORDS_AT + index * RECORD_LENGTH) as usize;
        let start = match index {
            0 => 0,
            _ => self.header[record - RECORD_LENGTH as usize + ENDS_AT as usize + 4] as u32,
        };
        let flags = self.header[record + FLAGS_AT as usize] as u32;
        let ends = [0, 1, 2, 3, 4].map(|i| self.header[record + ENDS_AT as usize + i] as u32);
        let present = [
            true,
            flags & ID != 0,
            flags & STATUS != 0,
            flags & LAST_ACTIVE != 0,
            flags & CONNECTION_ID != 0,
        ];
        let texts = (flags & TOO_LONG == 0)
            .then(|| self.texts(start, ends, present))
            .flatten();
        if let Some([Some(kind), id, status, last_active, connection_id]) = texts {
            let user = (flags & USER != 0).then(|| ReadUser {
                id: Cell::new(id),
                status: Cell::new(status),
                last_active: Cell::new(last_active),
                online: flags & ONLINE != 0,
            });
            return Some(Inbound {
                event,
                kind,
                connection_id,
                user,
                flags,
            });
        }
        // Too long for the buffer (or not written as UTF-8, which the handler never does): from the event.
        let wire: &Wire = event.unchecked_ref();
        let kind = wire.kind().as_string()?;
        let connection_id = wire.connection_id().as_string();
        Some(Inbound {
            event,
            kind,
            connection_id,
            user: None,
            flags: flags | TOO_LONG,
        })
    }

    /// The `present` strings, each copied into a spare one; `None` if one of them is not valid.
    fn texts(
        &mut self,
        start: u32,
        ends: [u32; 5],
        present: [bool; 5],
    ) -> Option<[Option<String>; 5]> {
        let mut texts: [Option<String>; 5] = Default::default();
        let mut start = start as usize;
        for (slot, (end, present)) in texts.iter_mut().zip(ends.into_iter().zip(present)) {
            let end = end as usize;
            if present {
                let bytes = self.scratch.get(start..end)?;
                let text = std::str::from_utf8(bytes).ok()?;
                let mut string = self.spare.pop().unwrap_or_default();
                string.clear();
                string.push_str(text);
                *slot = Some(string);
            }
            start = end;
        }
        Some(texts)
    }

    /// Takes back the strings of a handled frame (and of the user the session decoded from it).
    pub fn recycle(&mut self, inbound: Inbound, user: Option<UserPresence>) {
        let Inbound {
            kind,
            connection_id,
            user: read,
            ..
        } = inbound;
        let mut keep = |string: Option<String>| {
            if let Some(string) = string {
                if self.spare.len() < SPARE_STRINGS {
                    self.spare.push(string);
                }
            }
        };
        keep(Some(kind));
        keep(connection_id);
        if let Some(read) = read {
            keep(read.id.take());
            keep(read.status.take());
            keep(read.last_active.take());
        }
        if let Some(user) = user {
            keep(Some(user.id));
            keep(user.state.status);
            keep(user.state.last_active);
        }
    }
}

impl Inbound {
    pub fn event(&self) -> &JsValue {
        &self.event
    }

    /// What the session reads of it (once: the user's strings move into the frame).
    pub fn frame(&self) -> Frame<'_> {
        Frame::decode(&self.kind, self.connection_id.as_deref(), &self)
    }

    pub fn wire(&self) -> &Wire {
        self.event.unchecked_ref()
    }
}

impl<'a> WireEvent for &'a Inbound {
    type User = FrameUser<'a>;
    type Error = JsValue;

    fn user(&self) -> Option<FrameUser<'a>> {
        if let Some(user) = &self.user {
            return Some(FrameUser::Read(user));
        }
        if self.flags & TOO_LONG == 0 {
            return None;
        }
        self.wire().user().map(FrameUser::Object)
    }

    fn me(&self) -> Option<FrameUser<'a>> {
        if self.flags & ME == 0 {
            return None;
        }
        self.wire().me().map(FrameUser::Object)
    }

    fn error(&self) -> Option<JsValue> {
        if self.flags & ERROR == 0 {
            return None;
        }
        self.wire().error()
    }
}
