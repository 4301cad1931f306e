//! One Twilio media stream: waits for `start`, checks its stream pass, starts the call through
//! the call core, then turns Twilio's messages into call inputs (mu-law decoded to 16 kHz, keys,
//! echoed marks as playback reports) and the call's events into Twilio frames. `stop`, or the
//! socket closing, ends the call.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, info_span, warn, Instrument};

use super::output::{Output, PHONE_FORMAT};
use super::pass::StreamPass;
use super::wire::{StreamStart, TwilioIn};
use crate::audio::decode::base64_decode;
use crate::audio::input::InputDecoder;
use crate::auth::Authenticator;
use crate::call::keys::valid_digits;
use crate::call::{self, CallEvent, CallHandle, CallInput, CallServices, Owner, StartRequest};
use crate::protocol::{EndReason, ErrorCode};
use crate::transport::ws::{Inbound, Outbound};

/// How long an ending call may take to say it has ended.
const END_WAIT: Duration = Duration::from_secs(5);

type TwilioInbound = Inbound<Box<TwilioIn>>;

/// The call on this stream.
struct Active {
    handle: CallHandle,
    events: mpsc::Receiver<CallEvent>,
    input: InputDecoder,
    output: Output,
}

struct Stream {
    svc: Arc<CallServices>,
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

/// Runs the stream until Twilio stops it, the socket goes or the server shuts down.
pub async fn run(
    svc: Arc<CallServices>,
    auth: Authenticator,
    mut inbound: mpsc::Receiver<TwilioInbound>,
    out: mpsc::Sender<Outbound>,
    cancel: CancellationToken,
) {
    let mut s = Stream {
        svc,
        out,
        open: true,
        active: None,
    };
    let start = tokio::select! {
        _ = cancel.cancelled() => return s.close(1001, "server shutting down").await,
        start = first_start(&mut inbound) => match start {
            Some(start) => start,
            None => return,
        },
    };
    let pass = start
        .custom_parameters
        .get("token")
        .and_then(|t| StreamPass::verify(&auth, t).ok())
        // An outbound call's SID is Twilio's answer to placing it, after its pass was made.
        .filter(|p| p.call_sid == start.call_sid || p.outbound);
    let Some(pass) = pass else {
        s.svc.metrics.error(ErrorCode::Unauthorized);
        warn!(call_sid = %start.call_sid, "media stream without a valid stream pass: refused");
        return s.close(1008, "invalid stream token").await;
    };
    let format = &start.media_format;
    if format.encoding != "audio/x-mulaw" || format.sample_rate != 8_000 || format.channels != 1 {
        s.svc.metrics.error(ErrorCode::UnsupportedFormat);
        warn!(encoding = %format.encoding, rate = format.sample_rate, "media stream format refused");
        return s.close(1003, "unsupported media format").await;
    }
    let span = info_span!("twilio", call_sid = %start.call_sid, stream_sid = %start.stream_sid);
    async move {
        if !s.start_call(&pass, start.stream_sid).await {
            return s.close(1011, "the call could not start").await;
        }
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
                // The call ended by itself (its time ran out, an operator ended it).
                s.close(1000, "call ended").await;
            }
        }
        // Dropping the call's events ends it (`connection_lost`) if it is still on.
        drop(s.active.take());
        debug!("media stream closed");
    }
    .instrument(span)
    .await
}

/// Reads until Twilio's `start`; `None` if the stream ends first.
async fn first_start(inbound: &mut mpsc::Receiver<TwilioInbound>) -> Option<StreamStart> {
    loop {
        match inbound.recv().await? {
            Inbound::Message(m) => match *m {
                TwilioIn::Start { start } => return Some(start),
                TwilioIn::Stop => return None,
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

    async fn start_call(&mut self, pass: &StreamPass, stream_sid: String) -> bool {
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
                    output: Output::new(stream_sid),
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

    /// Sends the call's event to Twilio as frames; the call's end ends the stream.
    async fn on_event(&mut self, event: CallEvent) {
        let ended = matches!(event, CallEvent::Ended { .. });
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

    async fn on_inbound(&mut self, inbound: TwilioInbound) {
        let msg = match inbound {
            Inbound::Message(m) => *m,
            Inbound::Invalid(code, message) => {
                self.svc.metrics.error(code);
                debug!(%message, "a Twilio frame was not understood");
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
            TwilioIn::Media { media } => {
                if media.track.as_deref().is_some_and(|t| t != "inbound") {
                    return;
                }
                let Ok(bytes) = base64_decode(&media.payload) else {
                    return self.svc.metrics.error(ErrorCode::InvalidBase64);
                };
                let samples = match self.active.as_mut().map(|a| a.input.decode(&bytes)) {
                    Some(Ok(samples)) if !samples.is_empty() => samples,
                    _ => return,
                };
                self.input(CallInput::Audio(samples)).await
            }
            TwilioIn::Dtmf { dtmf } if valid_digits(&dtmf.digit) => {
                self.input(CallInput::Dtmf(dtmf.digit)).await
            }
            TwilioIn::Mark { mark } => {
                let played = self
                    .active
                    .as_mut()
                    .and_then(|a| a.output.echoed(&mark.name));
                if let Some((item_id, played_ms)) = played {
                    self.input(CallInput::Playback { item_id, played_ms }).await
                }
            }
            TwilioIn::Stop => {
                // The caller hung up.
                self.input(CallInput::End(EndReason::ClientEnded)).await;
                self.await_end().await;
                self.close(1000, "stopped").await
            }
            TwilioIn::Dtmf { .. }
            | TwilioIn::Connected
            | TwilioIn::Start { .. }
            | TwilioIn::Other => {}
        }
    }
}
