//! Request bodies on their way upstream, frame by frame: data and
//! trailers alike (SPEC 8), never turned into a stream of bytes, which
//! would drop the trailers.
//!
//! reqwest's `Body::wrap` asks for a `Sync` body and axum's is `Send`
//! only; [`Relayed`] lends it `Sync` (a body is only ever polled through
//! `&mut`, so nothing is shared). [`BodyHandoff`] keeps a body aside for a
//! request that may go to a second upstream. [`Holding`] keeps what a
//! response must outlive (its request's places in counts) to the end of
//! its body.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use axum::body::Body;
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use sync_wrapper::SyncWrapper;

/// A client's request body as reqwest sends it: every frame as it comes,
/// trailers included.
pub struct Relayed {
    inner: SyncWrapper<Body>,
    /// What `inner` said of its end and size when it was wrapped, kept up
    /// to date as frames pass: the wrapper lends no `&` to the body.
    ended: bool,
    remaining: SizeHint,
}

impl Relayed {
    pub fn new(body: Body) -> Self {
        Relayed {
            ended: http_body::Body::is_end_stream(&body),
            remaining: http_body::Body::size_hint(&body),
            inner: SyncWrapper::new(body),
        }
    }

    /// As reqwest takes it.
    pub fn into_reqwest(body: Body) -> reqwest::Body {
        reqwest::Body::wrap(Relayed::new(body))
    }
}

impl http_body::Body for Relayed {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(this.inner.get_mut()).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.remaining = less(&this.remaining, data.len() as u64);
                }
            }
            Poll::Ready(None) => this.ended = true,
            Poll::Ready(Some(Err(_))) | Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.ended
    }

    fn size_hint(&self) -> SizeHint {
        self.remaining
    }
}

/// What is left of `hint` once `sent` bytes have gone.
fn less(hint: &SizeHint, sent: u64) -> SizeHint {
    let mut left = SizeHint::new();
    let upper = hint.upper().map(|upper| upper.saturating_sub(sent));
    let lower = hint.lower().saturating_sub(sent);
    left.set_lower(upper.map_or(lower, |upper| lower.min(upper)));
    if let Some(upper) = upper {
        left.set_upper(upper);
    }
    left
}

/// A client's request body, kept aside until a try first reads it. A connect
/// that fails never reads the body (hyper polls it only on a connection),
/// so the next try can still send it; once read, it is that try's alone and
/// a request that has sent body bytes is never sent again.
///
/// The slot is a `std::sync::Mutex`, locked only to take the body out, once
/// per request and never across an `.await`; the lock is uncontended.
pub struct BodyHandoff(Arc<Mutex<Option<Body>>>);

impl BodyHandoff {
    pub fn new(body: Body) -> Self {
        BodyHandoff(Arc::new(Mutex::new(Some(body))))
    }

    pub fn unread(&self) -> bool {
        self.0.lock().map(|slot| slot.is_some()).unwrap_or(false)
    }

    /// The body for one try: it takes the client's body out of the slot
    /// when first polled.
    pub fn body(&self) -> reqwest::Body {
        reqwest::Body::wrap(HandedOff {
            slot: Arc::clone(&self.0),
            taken: None,
        })
    }
}

/// One try's view of a [`BodyHandoff`].
struct HandedOff {
    slot: Arc<Mutex<Option<Body>>>,
    taken: Option<Relayed>,
}

impl http_body::Body for HandedOff {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = self.get_mut();
        if this.taken.is_none() {
            let body = this.slot.lock().ok().and_then(|mut slot| slot.take());
            this.taken = body.map(Relayed::new);
        }
        match this.taken.as_mut() {
            Some(body) => Pin::new(body).poll_frame(cx),
            None => Poll::Ready(Some(Err(axum::Error::new(BodyTaken)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.taken.as_ref().is_some_and(|body| body.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        match &self.taken {
            Some(body) => body.size_hint(),
            None => SizeHint::default(),
        }
    }
}

/// A second try found the body already read by the first (never expected:
/// such a request is not tried again).
#[derive(Debug, thiserror::Error)]
#[error("the request body was already sent to another upstream")]
struct BodyTaken;

/// A body that keeps `held` until the body is dropped, at its end or when
/// the client goes.
pub struct Holding<B, H> {
    body: B,
    _held: H,
}

impl<B, H> Holding<B, H> {
    pub fn new(body: B, held: H) -> Self {
        Holding { body, _held: held }
    }
}

impl<B: http_body::Body + Unpin, H: Unpin> http_body::Body for Holding<B, H> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
