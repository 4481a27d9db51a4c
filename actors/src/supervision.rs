//! What an actor does when the code it runs for a message panics: the panic is caught
//! at the message's boundary, counted (`otg_actor_panics_total`) and logged, and the
//! actor drops what that message had in hand and goes on. One bad message costs one
//! answer (an error the caller can retry), never the actor, its thread, or the other
//! devices or employees it keeps.

use futures_util::FutureExt;
use prometheus::IntCounterVec;
use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;

/// Which kind of actor panicked: the metric's label.
#[derive(Debug, Clone, Copy)]
pub(crate) enum ActorKind {
    Device,
    Conflict,
}

impl ActorKind {
    pub(crate) const ALL: [ActorKind; 2] = [ActorKind::Device, ActorKind::Conflict];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ActorKind::Device => "device",
            ActorKind::Conflict => "conflict",
        }
    }
}

/// Counts and logs the panics of one kind of actor.
#[derive(Clone)]
pub(crate) struct PanicWatch {
    pub kind: ActorKind,
    pub panics: IntCounterVec,
}

impl PanicWatch {
    /// Runs `work`, catching a panic in it; a caught panic is counted and logged with
    /// `doing` and returned as `Err` with its message.
    ///
    /// `AssertUnwindSafe` is sound here because whatever `work` held is dropped with it:
    /// the actor keeps nothing it may have left half changed (see each caller).
    pub(crate) async fn run<F: Future>(self, doing: &'static str, work: F) -> Result<F::Output, String> {
        AssertUnwindSafe(work).catch_unwind().await.map_err(|panic| {
            let message = message_of(panic.as_ref());
            self.panics.with_label_values(&[self.kind.as_str()]).inc();
            tracing::error!(actor = self.kind.as_str(), doing, panic = %message, "an actor's work panicked; it goes on without it");
            message
        })
    }
}

fn message_of(panic: &(dyn Any + Send)) -> String {
    match (panic.downcast_ref::<&str>(), panic.downcast_ref::<String>()) {
        (Some(text), _) => (*text).to_owned(),
        (_, Some(text)) => text.clone(),
        _ => "a panic without a message".to_owned(),
    }
}
