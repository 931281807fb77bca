//! A server stream polled by its HTTP/2 stream itself, ended by shutdown or withdrawn rights.
//!
//! A stream fed by a task of its own through a channel costs, per message, a wake-up of that
//! task, a channel hand-over and a second wake-up of the HTTP/2 stream's task; and per stream a
//! task and a channel held for as long as it lasts. For a stream whose items are cheap to make
//! on demand (an Observe stream judging the election's published states) [`Guarded`] makes
//! them where hyper polls the response body: one wake-up per message, nothing held but the
//! stream. A client that stops reading stops the polling; what it misses is the source's to
//! handle (an Observe skips ahead to the latest state; a KeepAlive reads no more heartbeats, as
//! a task would once its channel were full).

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll, ready},
};

use pin_project_lite::pin_project;
use tokio_stream::Stream;
use tokio_util::sync::WaitForCancellationFutureOwned;

use crate::error::Error;

pin_project! {
    /// The items of `inner`, until the instance shuts down (then UNAVAILABLE) or `withdrawn`
    /// completes (then PERMISSION_DENIED with its message), whichever comes first; a source
    /// that fails ends the stream with that last item, and one that ends ends it as
    /// [`Guarded::new`] or [`Guarded::until_source_ends`] says. `permit` is held while the
    /// stream lasts.
    #[derive(Debug)]
    pub struct Guarded<S, W, P> {
        #[pin]
        inner: S,
        #[pin]
        shutdown: WaitForCancellationFutureOwned,
        #[pin]
        withdrawn: W,
        permit: P,
        ended: bool,
        // Whether the source's end ends the stream as it is (else with UNAVAILABLE).
        clean_end: bool,
    }
}

impl<S, W, P> Guarded<S, W, P> {
    /// Guards `inner`, a source that ends only when the instance shuts down: its end ends the
    /// stream with UNAVAILABLE. See [`Guarded`].
    pub fn new(inner: S, shutdown: WaitForCancellationFutureOwned, withdrawn: W, permit: P) -> Self {
        Self { inner, shutdown, withdrawn, permit, ended: false, clean_end: false }
    }

    /// Guards `inner`, a source whose end is the client's (it stopped sending): its end ends
    /// the stream as it is, with OK. See [`Guarded`].
    pub fn until_source_ends(inner: S, shutdown: WaitForCancellationFutureOwned, withdrawn: W, permit: P) -> Self {
        Self { inner, shutdown, withdrawn, permit, ended: false, clean_end: true }
    }
}

impl<S, W, P, T> Stream for Guarded<S, W, P>
where
    S: Stream<Item = Result<T, tonic::Status>>,
    W: Future<Output = &'static str>,
{
    type Item = Result<T, tonic::Status>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.project();
        if *this.ended {
            return Poll::Ready(None);
        }
        // Withdrawn rights and shutdown are judged before every item, so that no item follows
        // either once it is known.
        let last = if let Poll::Ready(message) = this.withdrawn.poll(cx) {
            Err(Error::NotAuthorized(message).into())
        } else if this.shutdown.poll(cx).is_ready() {
            Err(Error::ShuttingDown.into())
        } else {
            match ready!(this.inner.poll_next(cx)) {
                Some(Ok(item)) => return Poll::Ready(Some(Ok(item))),
                Some(Err(status)) => Err(status),
                None if *this.clean_end => {
                    *this.ended = true;
                    return Poll::Ready(None);
                }
                None => Err(Error::ShuttingDown.into()),
            }
        };
        *this.ended = true;
        Poll::Ready(Some(last))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::sync::oneshot;
    use tokio_stream::StreamExt;
    use tokio_util::sync::CancellationToken;

    use super::*;

    fn numbers() -> impl Stream<Item = Result<u32, tonic::Status>> {
        tokio_stream::iter(0..).map(Ok).throttle(Duration::from_millis(1))
    }

    #[tokio::test]
    async fn items_flow_until_shutdown_then_one_unavailable_and_the_end() {
        let shutdown = CancellationToken::new();
        let stream = Guarded::new(numbers(), shutdown.clone().cancelled_owned(), std::future::pending(), ());
        tokio::pin!(stream);
        assert_eq!(stream.next().await.map(|item| item.ok()), Some(Some(0)));
        assert_eq!(stream.next().await.map(|item| item.ok()), Some(Some(1)));
        shutdown.cancel();
        let last = stream.next().await.expect("a last item").expect_err("an error");
        assert_eq!(last.code(), tonic::Code::Unavailable);
        assert!(stream.next().await.is_none(), "nothing after the last item");
    }

    #[tokio::test]
    async fn withdrawn_rights_end_the_stream_with_their_message() {
        let (withdraw, withdrawn) = oneshot::channel::<()>();
        let withdrawn = async move {
            let _ = withdrawn.await;
            "rights withdrawn"
        };
        let stream = Guarded::new(numbers(), CancellationToken::new().cancelled_owned(), withdrawn, ());
        tokio::pin!(stream);
        assert!(matches!(stream.next().await, Some(Ok(0))));
        withdraw.send(()).expect("the stream listens");
        let last = stream.next().await.expect("a last item").expect_err("an error");
        assert_eq!(last.code(), tonic::Code::PermissionDenied);
        assert_eq!(last.message(), "rights withdrawn");
        assert!(stream.next().await.is_none(), "nothing after the last item");
    }

    #[tokio::test]
    async fn a_source_that_ends_ends_the_stream_unavailable() {
        let stream = Guarded::new(
            tokio_stream::iter([Ok(7)]),
            CancellationToken::new().cancelled_owned(),
            std::future::pending(),
            (),
        );
        tokio::pin!(stream);
        assert!(matches!(stream.next().await, Some(Ok(7))));
        let last = stream.next().await.expect("a last item").expect_err("an error");
        assert_eq!(last.code(), tonic::Code::Unavailable);
        assert!(stream.next().await.is_none());
    }

    #[tokio::test]
    async fn a_source_the_client_ended_ends_the_stream_as_it_is_and_an_error_ends_it_too() {
        let shutdown = CancellationToken::new();
        let stream = Guarded::until_source_ends(
            tokio_stream::iter([Ok(7)]),
            shutdown.clone().cancelled_owned(),
            std::future::pending(),
            (),
        );
        tokio::pin!(stream);
        assert!(matches!(stream.next().await, Some(Ok(7))));
        assert!(stream.next().await.is_none(), "no error after a clean end");
        shutdown.cancel();
        assert!(stream.next().await.is_none(), "nothing after the end");

        let failing = [Ok(1), Err(tonic::Status::failed_precondition("moved")), Ok(2)];
        let stream = Guarded::until_source_ends(
            tokio_stream::iter(failing),
            CancellationToken::new().cancelled_owned(),
            std::future::pending(),
            (),
        );
        tokio::pin!(stream);
        assert!(matches!(stream.next().await, Some(Ok(1))));
        let last = stream.next().await.expect("a last item").expect_err("an error");
        assert_eq!(last.code(), tonic::Code::FailedPrecondition);
        assert!(stream.next().await.is_none(), "nothing after the error");
    }
}
