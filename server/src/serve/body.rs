//! A request's life as the listener tracks it: counted in progress until its response is sent, its body
//! guarded against stalls and watched for being read to the end.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::Request;
use http_body::{Frame, SizeHint};
use tokio::time::Sleep;

use super::registry::ConnState;

/// A request in progress on a connection; ends when dropped.
pub struct InFlight(Option<Arc<ConnState>>);

impl InFlight {
    /// Counts a request in, unless the connection was evicted.
    pub fn start(state: &Arc<ConnState>) -> Option<InFlight> {
        state
            .start_request()
            .then(|| InFlight(Some(Arc::clone(state))))
    }

    /// The request became the connection's upgraded socket: in progress for as long as it is open.
    pub fn keep_forever(mut self) {
        self.0 = None;
    }

    /// The response body, the request in progress until it is sent (or dropped).
    pub fn until_sent(self, body: Body) -> SendingBody {
        SendingBody {
            inner: body,
            _in_flight: self,
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Some(state) = self.0.take() {
            state.end_request();
        }
    }
}

/// A response body that keeps its request in progress.
pub struct SendingBody {
    inner: Body,
    _in_flight: InFlight,
}

impl http_body::Body for SendingBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A request body that fails when no bytes arrive for the stall timeout while the handler waits for them, and
/// records when it has been read to its end.
pub struct ProgressBody<B> {
    inner: B,
    stall_timeout: Duration,
    stall: Option<Pin<Box<Sleep>>>,
    read: Arc<AtomicBool>,
}

impl<B> ProgressBody<B>
where
    B: http_body::Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<axum::BoxError>,
{
    /// `req` with its body guarded, and the flag that tells whether the body was read to its end (set at
    /// once for a request without a body).
    pub fn wrap(req: Request<B>, stall_timeout: Duration) -> (Request<Body>, Arc<AtomicBool>) {
        let read = Arc::new(AtomicBool::new(req.body().is_end_stream()));
        let flag = Arc::clone(&read);
        let req = req.map(|inner| {
            Body::new(ProgressBody {
                inner,
                stall_timeout,
                stall: None,
                read: flag,
            })
        });
        (req, read)
    }
}

impl<B> http_body::Body for ProgressBody<B>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: Into<axum::BoxError>,
{
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.stall = None;
                if frame.is_none() || this.inner.is_end_stream() {
                    this.read.store(true, Ordering::Release);
                }
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => {
                let timeout = this.stall_timeout;
                let stall = this
                    .stall
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                match stall.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Some(Err(format!(
                        "the request body made no progress for {} ms",
                        timeout.as_millis()
                    )
                    .into()))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
