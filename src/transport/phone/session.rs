//! One carrier media stream: waits for `start`, checks its stream pass, starts the call through
//! the call core, then turns the carrier's messages into call inputs (mu-law decoded to 16 kHz,
//! keys, echoed marks as playback reports) and the call's events into the carrier's frames.
//! `stop`, or the socket closing, ends the call. What ended it is the [`Outcome`], for the
//! door to act on (hang up, transfer).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, info_span, warn, Instrument};

use super::output::{Output, PHONE_FORMAT};
use super::pass::StreamPass;
use super::{Door, PhoneIn, PhoneStart};
use crate::audio::decode::base64_decode;
use crate::audio::input::InputDecoder;
use crate::auth::Authenticator;
use crate::call::keys::valid_digits;
use crate::call::{
    self, CallEvent, CallHandle, CallInput, CallServices, Owner, StartRequest, ToolEvent,
};
use crate::config::valid_number;
use crate::protocol::{EndReason, ErrorCode};
use crate::transport::ws::{Inbound, Outbound};

/// How long an ending call may take to say it has ended.
const END_WAIT: Duration = Duration::from_secs(5);

type PhoneInbound = Inbound<Box<PhoneIn>>;

/// What a stream needs besides its socket.
pub struct Setup {
    pub svc: Arc<CallServices>,
    pub auth: Authenticator,
    pub door: Door,
    /// The pass the socket's URL brought, already checked (Telnyx).
    pub url_pass: Option<StreamPass>,
}

/// How a stream ended.
#[derive(Debug, Default)]
pub struct Outcome {
    /// The pass of the call it carried; none if no call started.
    pub pass: Option<StreamPass>,
    /// The carrier's id of the call, from `start`.
    pub call_id: String,
    /// Why the call ended, when it said so.
    pub reason: Option<EndReason>,
    /// The carrier stopped the stream (the caller hung up): the line is gone.
    pub stopped: bool,
    /// Where the agent transferred the call (its `transfer` tool).
    pub transferred_to: Option<String>,
    /// The socket, still open when the call ended by itself (its time ran out, an operator
    /// ended it, a transfer): the door acts on the line first, then closes it.
    pub open: Option<mpsc::Sender<Outbound>>,
}

impl Outcome {
    /// The number to transfer the line to: the call ended `transferred` to a phone number
    /// (E.164) while the caller was still on it. A target that is no number (a department's
    /// name) is for the agent's own logic: the line is not transferred.
    pub fn transfer_target(&self) -> Option<&str> {
        let to = self.transferred_to.as_deref()?.trim();
        let on_line = self.pass.is_some() && !self.stopped && self.open.is_some();
        (on_line && self.reason == Some(EndReason::Transferred) && valid_number(to)).then_some(to)
    }
}

/// The call on this stream.
struct Active {
    handle: CallHandle,
    events: mpsc::Receiver<CallEvent>,
    input: InputDecoder,
    output: Output,
}

struct Stream {
    svc: Arc<CallServices>,
    door: Door,
    outcome: Outcome,
    out: mpsc::Sender<Outbound>,
    /// False once the writer is gone or the socket is being closed.
    open: bool,
    active: Option<Active>,
}

/// The next event of the call; pending while there is none.
async fn next_event(active: &mut Option<Active>) -> Option<CallEvent> {
    match active {
        Some(a) => a.events.recv().await,
        None => std::future::pending().await,
    }
}

/// Runs the stream until the carrier stops it, the socket goes or the server shuts down.
pub async fn run(
    setup: Setup,
    mut inbound: mpsc::Receiver<PhoneInbound>,
    out: mpsc::Sender<Outbound>,
    cancel: CancellationToken,
) -> Outcome {
    let Setup {
        svc,
        auth,
        door,
        url_pass,
    } = setup;
    let mut s = Stream {
        svc,
        door,
        outcome: Outcome::default(),
        out,
        open: true,
        active: None,
    };
    let start = tokio::select! {
        _ = cancel.cancelled() => {
            s.close(1001, "server shutting down").await;
            return s.outcome;
        }
        start = first_start(&mut inbound) => match start {
            Some(start) => start,
            None => return s.outcome,
        },
    };
    let pass = url_pass
        .or_else(|| {
            let token = start.pass.as_deref()?;
            StreamPass::verify(&auth, token, door.carrier).ok()
        })
        // An outbound call's id is the carrier's answer to placing it, after its pass was made.
        .filter(|p| p.call_sid == start.call_id || p.outbound);
    let Some(pass) = pass else {
        s.svc.metrics.error(ErrorCode::Unauthorized);
        warn!(call_id = %start.call_id, "media stream without a valid stream pass: refused");
        s.close(1008, "invalid stream token").await;
        return s.outcome;
    };
    if !start.mulaw_8k {
        s.svc.metrics.error(ErrorCode::UnsupportedFormat);
        warn!(format = %start.format, "media stream format refused");
        s.close(1003, "unsupported media format").await;
        return s.outcome;
    }
    s.outcome.call_id = start.call_id.clone();
    let span = info_span!(
        "phone",
        carrier = door.carrier.as_str(),
        call_id = %start.call_id,
        stream_id = %start.stream_id
    );
    async move {
        if !s.start_call(&pass, &start.stream_id).await {
            s.close(1011, "the call could not start").await;
            return s.outcome;
        }
        s.outcome.pass = Some(pass);
        while s.open {
            tokio::select! {
                biased;
                _ = cancel.cancelled() => {
                    // The call hears the shutdown too and ends itself.
                    s.await_end().await;
                    s.close(1001, "server shutting down").await;
                }
                _ = s.out.closed() => s.open = false,
                Some(event) = next_event(&mut s.active) => s.on_event(event).await,
                msg = inbound.recv() => match msg {
                    Some(m) => s.on_inbound(m).await,
                    None => break,
                },
            }
            if s.active.is_none() && s.open {
                // The call ended by itself: the door closes the socket once it has acted.
                s.outcome.open = Some(s.out.clone());
                break;
            }
        }
        // Dropping the call's events ends it (`connection_lost`) if it is still on.
        drop(s.active.take());
        debug!("media stream closed");
        s.outcome
    }
    .instrument(span)
    .await
}

/// Reads until the carrier's `start`; `None` if the stream ends first.
async fn first_start(inbound: &mut mpsc::Receiver<PhoneInbound>) -> Option<PhoneStart> {
    loop {
        match inbound.recv().await? {
            Inbound::Message(m) => match *m {
                PhoneIn::Start(start) => return Some(start),
                PhoneIn::Stop => return None,
                _ => {}
            },
            Inbound::Fatal(..) | Inbound::Idle => return None,
            Inbound::Invalid(..) | Inbound::Audio(_) => {}
        }
    }
}

impl Stream {
    async fn send(&mut self, frame: String) {
        if self.open && self.out.send(Outbound::Text(frame)).await.is_err() {
            self.open = false;
        }
    }

    async fn close(&mut self, code: u16, reason: &str) {
        if self.open {
            let _ = self
                .out
                .send(Outbound::Close(code, reason.to_string()))
                .await;
        }
        self.open = false;
    }

    async fn start_call(&mut self, pass: &StreamPass, stream_id: &str) -> bool {
        let Ok(input) = InputDecoder::new(PHONE_FORMAT) else {
            return false;
        };
        let sub = pass.subject();
        // The numbers are the carrier's word: variables given when the call was placed do not
        // replace them.
        let mut variables = pass.variables.clone();
        variables.insert("caller_number".to_string(), pass.from.clone());
        variables.insert("called_number".to_string(), pass.to.clone());
        let request = StartRequest {
            owner: Owner {
                sub,
                org: pass.org.clone(),
            },
            agent: pass.agent.clone(),
            token_agent: None,
            resume: None,
            variables,
            detection: None,
            greet: true,
            push_to_talk: false,
            record: None,
            session: None,
        };
        match call::start(&self.svc, request).await {
            Ok(started) => {
                info!(call_id = %started.call_id, agent = %started.agent, "phone call started");
                self.active = Some(Active {
                    handle: started.handle,
                    events: started.events,
                    input,
                    output: Output::new((self.door.wire)(stream_id)),
                });
                true
            }
            Err(e) => {
                self.svc.metrics.error(e.code);
                warn!(code = e.code.as_str(), error = %e, "a phone call could not start");
                false
            }
        }
    }

    /// Sends the call's event to the carrier as frames; the call's end ends the stream.
    async fn on_event(&mut self, event: CallEvent) {
        let ended = matches!(event, CallEvent::Ended { .. });
        match &event {
            CallEvent::Ended { reason, .. } => self.outcome.reason = Some(*reason),
            CallEvent::Tool(ToolEvent::Transfer { to, .. }) => {
                self.outcome.transferred_to = Some(to.clone())
            }
            _ => {}
        }
        let Some(a) = self.active.as_mut() else {
            return;
        };
        let frames = a.output.translate(&event);
        if ended {
            self.active = None;
        }
        for f in frames {
            self.send(f).await;
        }
    }

    /// Forwards the call's events until it has ended (or goes quiet too long).
    async fn await_end(&mut self) {
        let deadline = tokio::time::Instant::now() + END_WAIT;
        while self.active.is_some() {
            match tokio::time::timeout_at(deadline, next_event(&mut self.active)).await {
                Ok(Some(event)) => self.on_event(event).await,
                Ok(None) | Err(_) => self.active = None,
            }
        }
    }

    /// Sends the call an input, forwarding its events meanwhile (it may be waiting for room
    /// to send them).
    async fn input(&mut self, input: CallInput) {
        let Some(handle) = self.active.as_ref().map(|a| a.handle.clone()) else {
            return;
        };
        let mut send = std::pin::pin!(handle.send(input));
        loop {
            tokio::select! {
                biased;
                r = &mut send => {
                    if r.is_err() {
                        self.await_end().await;
                    }
                    return;
                }
                Some(event) = next_event(&mut self.active) => self.on_event(event).await,
            }
        }
    }

    async fn on_inbound(&mut self, inbound: PhoneInbound) {
        let msg = match inbound {
            Inbound::Message(m) => *m,
            Inbound::Invalid(code, message) => {
                self.svc.metrics.error(code);
                debug!(%message, "a carrier frame was not understood");
                return;
            }
            Inbound::Audio(_) => return,
            Inbound::Fatal(code, message, close) => {
                self.svc.metrics.error(code);
                warn!(%message, "media stream refused a frame");
                self.input(CallInput::End(EndReason::FatalError)).await;
                self.await_end().await;
                return self.close(close, code.as_str()).await;
            }
            Inbound::Idle => {
                self.input(CallInput::End(EndReason::PingTimeout)).await;
                self.await_end().await;
                return self.close(1001, "ping timeout").await;
            }
        };
        match msg {
            PhoneIn::Media(payload) => {
                let Ok(bytes) = base64_decode(&payload) else {
                    return self.svc.metrics.error(ErrorCode::InvalidBase64);
                };
                let samples = match self.active.as_mut().map(|a| a.input.decode(&bytes)) {
                    Some(Ok(samples)) if !samples.is_empty() => samples,
                    _ => return,
                };
                self.input(CallInput::Audio(samples)).await
            }
            PhoneIn::Dtmf(digit) if valid_digits(&digit) => {
                self.input(CallInput::Dtmf(digit)).await
            }
            PhoneIn::Mark(name) => {
                let played = self.active.as_mut().and_then(|a| a.output.echoed(&name));
                if let Some((item_id, played_ms)) = played {
                    self.input(CallInput::Playback { item_id, played_ms }).await
                }
            }
            PhoneIn::Stop => {
                // The caller hung up.
                self.outcome.stopped = true;
                self.input(CallInput::End(EndReason::ClientEnded)).await;
                self.await_end().await;
                self.close(1000, "stopped").await
            }
            PhoneIn::Dtmf(_) | PhoneIn::Start(_) | PhoneIn::Other => {}
        }
    }
}
