//! Calls, independent of how the caller reaches them: the registry of calls and their
//! histories, starting a call, the call actor (what the caller says, what the agent says and
//! what was heard), typed inputs and events, handles to reach a live call, and the turn pipeline
//! (speech-to-text, language model, text-to-speech) with cancellation.

pub mod actor;
pub mod caller;
pub mod event;
pub mod feed;
mod flow;
pub mod handle;
pub mod history;
pub mod keys;
pub mod listen;
pub mod operator;
pub mod playback;
pub mod record;
pub mod recording;
pub mod reply;
pub mod services;
mod session;
pub mod start;
pub mod store;
pub mod turn;
pub mod usage;

pub use event::{CallEvent, CallInput, ToolEvent};
pub use feed::{CallMeta, Feed, FeedEvent, FeedItem, FeedReceiver};
pub use handle::{AudioStream, CallHandle, ListenAudio, Received, Subscription};
pub use operator::{
    Operator, OperatorAction, OperatorCommand, OperatorEventKind, OperatorRefusal, OperatorView,
};
pub use services::CallServices;
pub use start::{start, StartError, StartRequest, Started};
pub use store::{CallState, CallStore, LiveInfo, Owner};
