//! Mirroring (SPEC 7.6): a copy of a share of a route's requests, body
//! included, sent to another URL with `x-switchyard-mirror: 1`, its answer
//! discarded. The original never waits for its copy and never fails
//! because of it:
//!
//! - the copy runs in a task of its own, on the worker's runtime;
//! - its body is fed by a [`Tee`] over the original body, which offers each
//!   chunk to a small bounded channel and never waits on it: a copy that
//!   cannot keep up is abandoned (its body ends in an error, so the mirror
//!   sees an aborted request, never a truncated one that looks whole);
//! - a request body over [`MAX_COPIED_BODY`] is not copied;
//! - at most [`MAX_COPIES_PER_WORKER`] copies are in flight on a worker;
//!   beyond that, none is made.

use std::cell::Cell;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use http::header::CONTENT_LENGTH;
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use http_body::{Frame, SizeHint};
use sync_wrapper::SyncWrapper;
use tokio::sync::mpsc;
use url::Url;

use crate::routes::limits::Mirror;

/// A request body longer than this is not copied (SPEC 7.6): a mirror is
/// for seeing how a new version answers, not for doubling uploads.
pub const MAX_COPIED_BODY: u64 = 1024 * 1024;

/// Copies in flight on one worker at most (SPEC 7.6): a mirror that stops
/// answering holds this many tasks and connections, never more.
pub const MAX_COPIES_PER_WORKER: usize = 64;

/// Chunks of a body waiting for the copy: when the copy has not taken this
/// many, it is behind the original, and abandoned rather than waited for.
const COPY_BACKLOG: usize = 16;

/// The header that tells the mirror a request is a copy.
pub const MIRROR_HEADER: HeaderName = HeaderName::from_static("x-switchyard-mirror");

thread_local! {
    /// Copies this worker has in flight.
    static COPIES: Cell<usize> = const { Cell::new(0) };
}

/// Holds one of this worker's copy places until dropped.
struct CopyPlace;

impl CopyPlace {
    fn take() -> Option<CopyPlace> {
        COPIES.with(|copies| {
            (copies.get() < MAX_COPIES_PER_WORKER).then(|| {
                copies.set(copies.get() + 1);
                CopyPlace
            })
        })
    }
}

impl Drop for CopyPlace {
    fn drop(&mut self) {
        COPIES.with(|copies| copies.set(copies.get().saturating_sub(1)));
    }
}

/// Starts a copy of a request, if this one is in the mirrored share and a
/// copy may be made now, and returns the body the original should send
/// (the same body, teed when there is one to copy) and whether a copy
/// was started. `url` is where the
/// copy goes (the mirror's base joined with the path, and the query);
/// `timeout` bounds the copy's whole exchange.
pub fn copy(
    mirror: &Arc<Mirror>,
    client: reqwest::Client,
    method: &Method,
    url: Url,
    headers: &HeaderMap,
    body: Option<Body>,
    timeout: Duration,
) -> (Option<Body>, bool) {
    if !mirror.selects() {
        return (body, false);
    }
    let too_long = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
        .is_some_and(|length| length > MAX_COPIED_BODY);
    let place = match CopyPlace::take() {
        Some(place) if !too_long => place,
        _ => {
            mirror.dropped.fetch_add(1, Ordering::Relaxed);
            return (body, false);
        }
    };
    let mut request = reqwest::Request::new(method.clone(), url);
    *request.headers_mut() = headers.clone();
    request
        .headers_mut()
        .insert(MIRROR_HEADER, HeaderValue::from_static("1"));
    *request.timeout_mut() = Some(timeout);
    let (body, feed) = match body {
        None => (None, None),
        Some(body) => {
            let (tee, feed) = Tee::new(body);
            (Some(Body::new(tee)), Some(feed))
        }
    };
    if let Some(feed) = feed {
        *request.body_mut() = Some(reqwest::Body::wrap_stream(feed.into_stream()));
    }
    let mirror = Arc::clone(mirror);
    tokio::spawn(async move {
        let _place = place;
        match client.execute(request).await {
            Ok(answer) => {
                // The answer is read to its end (and thrown away) so the
                // connection can serve the next copy.
                let _ = answer.bytes().await;
                mirror.sent.fetch_add(1, Ordering::Relaxed);
            }
            Err(error) if is_abandoned(&error) => {
                mirror.dropped.fetch_add(1, Ordering::Relaxed);
            }
            Err(error) => {
                tracing::debug!(mirror = %mirror.spec.to, %error, "mirrored copy failed");
                mirror.failed.fetch_add(1, Ordering::Relaxed);
            }
        }
    });
    (body, true)
}

/// Whether a copy failed because its body was abandoned, not because the
/// mirror failed.
fn is_abandoned(error: &reqwest::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(cause) = source {
        if cause.downcast_ref::<Abandoned>().is_some() {
            return true;
        }
        source = cause.source();
    }
    false
}

/// The copy fell behind the original, or the body grew past
/// [`MAX_COPIED_BODY`]: it ends in this error.
#[derive(Debug, thiserror::Error)]
#[error("the mirrored copy was abandoned: it fell behind or its body was too long")]
struct Abandoned;

/// The original body, passing every frame through and offering each data
/// chunk to the copy.
struct Tee {
    inner: SyncWrapper<Body>,
    to_copy: Option<mpsc::Sender<Bytes>>,
    copied: u64,
    /// Set once the original body has ended whole, so the copy's end is a
    /// clean one.
    complete: Arc<AtomicBool>,
}

/// What the copy's body is made of.
struct Feed {
    chunks: mpsc::Receiver<Bytes>,
    complete: Arc<AtomicBool>,
}

impl Tee {
    fn new(body: Body) -> (Tee, Feed) {
        let (sender, chunks) = mpsc::channel(COPY_BACKLOG);
        let complete = Arc::new(AtomicBool::new(false));
        (
            Tee {
                inner: SyncWrapper::new(body),
                to_copy: Some(sender),
                copied: 0,
                complete: Arc::clone(&complete),
            },
            Feed { chunks, complete },
        )
    }
}

impl http_body::Body for Tee {
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
                if let (Some(data), Some(to_copy)) = (frame.data_ref(), this.to_copy.as_ref()) {
                    this.copied += data.len() as u64;
                    // Full (the copy is behind) or closed (it ended): either
                    // way the copy gets no more, and its body errors out.
                    if this.copied > MAX_COPIED_BODY || to_copy.try_send(data.clone()).is_err() {
                        this.to_copy = None;
                    }
                }
            }
            Poll::Ready(None) => {
                if this.to_copy.take().is_some() {
                    this.complete.store(true, Ordering::Release);
                }
            }
            Poll::Ready(Some(Err(_))) => this.to_copy = None,
            Poll::Pending => {}
        }
        polled
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

impl Feed {
    fn into_stream(self) -> impl futures_util::Stream<Item = Result<Bytes, Abandoned>> + Send {
        futures_util::stream::unfold(Some(self), |feed| async move {
            let mut feed = feed?;
            match feed.chunks.recv().await {
                Some(chunk) => Some((Ok(chunk), Some(feed))),
                None if feed.complete.load(Ordering::Acquire) => None,
                None => Some((Err(Abandoned), None)),
            }
        })
    }
}
