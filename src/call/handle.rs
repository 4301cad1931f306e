//! A live call's handle: send it input, subscribe to its events. Any part of the server that
//! holds one can reach the call; the registry in `store.rs` hands them out by call id.

use std::sync::Arc;

use tokio::sync::{broadcast, mpsc};

use super::event::{CallEvent, CallInput};

/// Events kept for each subscriber; past that, a slow subscriber loses the oldest. The buffer
/// is allocated with the call (about 20 KB), so it stays small: a few turns of events.
pub const SUBSCRIBER_BUFFER: usize = 256;
/// Audio chunks kept for each listener (a few seconds of either side); past that, a slow
/// listener loses the oldest.
pub const LISTEN_BUFFER: usize = 128;

/// Whose audio a listened chunk is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AudioStream {
    /// What the caller says, as the call received it (16 kHz).
    Caller = 1,
    /// What the caller hears: the agent's replies and the operator's lines and voice.
    Agent = 2,
}

/// A chunk of a call's audio for listeners (operators listening in).
#[derive(Debug, Clone)]
pub struct ListenAudio {
    pub stream: AudioStream,
    pub samples: Arc<[f32]>,
    pub sample_rate: u32,
}

#[derive(Clone)]
pub struct CallHandle {
    pub call_id: String,
    inputs: mpsc::Sender<CallInput>,
    /// Weak, so that subscribers see the stream close when the call ends even while handles
    /// are held.
    events: broadcast::WeakSender<CallEvent>,
    /// The call's audio, both sides; weak like `events`.
    listen: broadcast::WeakSender<ListenAudio>,
}

/// The call has ended (or is ending): it takes no more input.
#[derive(Debug, thiserror::Error)]
#[error("the call has ended")]
pub struct CallGone;

impl CallHandle {
    pub fn new(
        call_id: String,
        inputs: mpsc::Sender<CallInput>,
        events: broadcast::Sender<CallEvent>,
        listen: broadcast::Sender<ListenAudio>,
    ) -> Self {
        Self {
            call_id,
            inputs,
            events: events.downgrade(),
            listen: listen.downgrade(),
        }
    }

    /// Sends input, waiting if the call is behind on its inputs.
    pub async fn send(&self, input: CallInput) -> Result<(), CallGone> {
        self.inputs.send(input).await.map_err(|_| CallGone)
    }

    /// Sends input only if the call has room for it now.
    pub fn try_send(&self, input: CallInput) -> Result<(), CallGone> {
        self.inputs.try_send(input).map_err(|_| CallGone)
    }

    /// Events from now on. A subscriber that falls more than [`SUBSCRIBER_BUFFER`] events
    /// behind is told how many it missed; the call never waits for it.
    pub fn subscribe(&self) -> Subscription {
        let rx = match self.events.upgrade() {
            Some(tx) => tx.subscribe(),
            // The call has ended: a stream that is closed from the start.
            None => broadcast::channel(1).1,
        };
        Subscription { rx }
    }

    /// The call's audio from now on, caller and agent, while it is live: `None` once it ended.
    /// The call copies its audio only while someone listens, and never waits for a listener.
    pub fn listen(&self) -> Option<broadcast::Receiver<ListenAudio>> {
        self.listen.upgrade().map(|tx| tx.subscribe())
    }

    pub fn is_ended(&self) -> bool {
        self.inputs.is_closed()
    }
}

pub struct Subscription {
    rx: broadcast::Receiver<CallEvent>,
}

/// What a subscriber gets next.
#[derive(Debug)]
pub enum Received {
    Event(CallEvent),
    /// This many events were lost because the subscriber was slow.
    Missed(u64),
    /// The call has ended and every event was delivered.
    Closed,
}

impl Subscription {
    pub async fn recv(&mut self) -> Received {
        match self.rx.recv().await {
            Ok(e) => Received::Event(e),
            Err(broadcast::error::RecvError::Lagged(n)) => Received::Missed(n),
            Err(broadcast::error::RecvError::Closed) => Received::Closed,
        }
    }
}
