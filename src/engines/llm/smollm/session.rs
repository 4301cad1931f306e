//! A per-call chat session: its own KV cache plus the token ids in it, so each turn only
//! runs the tokens that are new since the last one.
//!
//! Each turn encodes the whole conversation, keeps the longest cached prefix that matches
//! (truncating the cache where they diverge: an edited or trimmed history costs only the
//! changed tail), runs the rest, then streams the reply. Conversations longer than the
//! context window drop their oldest turns; the trim point is sticky so that following turns
//! keep reusing the cache instead of re-trimming every time.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use super::chat::{assistant_header, encode_message, ChatMessage, Role};
use super::error::LlmError;
use super::model::KvCache;
use super::sampling::{apply_repeat_penalty, Sampler};
use super::tokenizer::Utf8Stream;
use super::SmolLm;

/// Prompt tokens run per forward pass (bounds the attention scratch memory).
const PROMPT_CHUNK: usize = 256;

/// Sampling and length limits of one reply.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerateParams {
    /// Most tokens the reply may have (at least 1).
    pub max_tokens: usize,
    /// 0 = greedy; otherwise the softmax temperature.
    pub temperature: f64,
    /// Nucleus mass kept when sampling (1.0 = all).
    pub top_p: f64,
    /// RNG seed: the same seed, prompt and parameters give the same reply.
    pub seed: u64,
    /// Penalty on tokens already in this reply's last `repeat_last_n` tokens (1.0 = off).
    /// Small models loop ("I'm not. I'm not. ...") without it.
    pub repeat_penalty: f32,
    pub repeat_last_n: usize,
}

impl Default for GenerateParams {
    fn default() -> Self {
        Self {
            max_tokens: 96,
            temperature: 0.3,
            top_p: 0.9,
            seed: 0,
            repeat_penalty: 1.1,
            repeat_last_n: 64,
        }
    }
}

/// Why the reply ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// The model ended its turn (`<|im_end|>` or `<|endoftext|>`).
    EndOfTurn,
    /// `max_tokens` or the context window was reached.
    MaxTokens,
    /// The cancel check returned true or the delta callback returned false.
    Cancelled,
}

/// Figures about one reply.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerationStats {
    /// Tokens of the full prompt (after any history trimming).
    pub prompt_tokens: usize,
    /// Of those, already in the cache and not run again.
    pub cached_tokens: usize,
    /// Reply tokens produced (end-of-turn marker not counted).
    pub generated_tokens: usize,
    /// Messages dropped from the start of the history to fit the context.
    pub dropped_messages: usize,
    /// From the call to the first reply token being chosen.
    pub first_token_ms: f64,
    pub total_ms: f64,
    pub stop_reason: StopReason,
}

/// Where the history is cut: index (among non-system messages) of the first kept message,
/// and its ids, to check the next turn still has the same message there.
struct TrimPoint {
    start: usize,
    first_ids: Vec<u32>,
}

/// One call's conversation state. `Send`; use it from one thread at a time.
pub struct ChatSession {
    model: Arc<SmolLm>,
    cache: KvCache,
    /// Token ids whose K/V are in `cache`, position by position.
    cached_ids: Vec<u32>,
    variables: HashMap<String, String>,
    trim: Option<TrimPoint>,
}

fn common_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

impl ChatSession {
    pub(super) fn new(model: Arc<SmolLm>) -> Self {
        let cache = model.weights().new_cache();
        Self {
            model,
            cache,
            cached_ids: Vec::new(),
            variables: HashMap::new(),
            trim: None,
        }
    }

    /// Sets the values substituted for `{{name}}` in system messages.
    pub fn set_variables(&mut self, vars: HashMap<String, String>) {
        self.variables = vars;
    }

    pub fn variables(&self) -> &HashMap<String, String> {
        &self.variables
    }

    /// Tokens currently held in the cache.
    pub fn cached_tokens(&self) -> usize {
        self.cached_ids.len()
    }

    /// Bytes held by this session's KV cache.
    pub fn cache_memory_bytes(&self) -> usize {
        self.cache.memory_bytes()
    }

    /// Forgets the cache (and frees its memory).
    pub fn reset(&mut self) {
        self.cache.clear();
        self.cached_ids.clear();
        self.trim = None;
    }

    /// Generates the assistant's reply to `messages`, streaming text deltas (always whole
    /// UTF-8 characters) to `on_delta`; returning false from it stops the reply. `cancel` is
    /// polled before every model step, so a cancellation stops within one token.
    pub fn generate(
        &mut self,
        messages: &[ChatMessage],
        params: &GenerateParams,
        cancel: &dyn Fn() -> bool,
        on_delta: &mut dyn FnMut(&str) -> bool,
    ) -> Result<GenerationStats, LlmError> {
        let t0 = Instant::now();
        if messages.is_empty() {
            return Err(LlmError::InvalidRequest("no messages".into()));
        }
        if params.max_tokens == 0 {
            return Err(LlmError::InvalidRequest(
                "max_tokens must be at least 1".into(),
            ));
        }
        let max_context = self.model.max_context();
        let reserve = params.max_tokens.min(max_context / 4).max(1);
        let (prompt, dropped) = self.build_prompt(messages, max_context - reserve)?;
        let lcp = common_prefix(&self.cached_ids, &prompt).min(prompt.len() - 1);
        self.cache.truncate(lcp);
        self.cached_ids.truncate(lcp);

        let mut stats = GenerationStats {
            prompt_tokens: prompt.len(),
            cached_tokens: lcp,
            generated_tokens: 0,
            dropped_messages: dropped,
            first_token_ms: 0.0,
            total_ms: 0.0,
            stop_reason: StopReason::Cancelled,
        };
        let ms = |t: Instant| t.elapsed().as_secs_f64() * 1000.0;

        let mut logits = Vec::new();
        for chunk in prompt[lcp..].chunks(PROMPT_CHUNK) {
            if cancel() {
                stats.total_ms = ms(t0);
                return Ok(stats);
            }
            logits = self.feed(chunk)?;
        }

        let model = Arc::clone(&self.model);
        let tok = model.tokenizer();
        let budget = params
            .max_tokens
            .min(max_context.saturating_sub(self.cache.len()));
        let mut sampler = Sampler::new(params.temperature, params.top_p, params.seed);
        let mut utf8 = Utf8Stream::default();
        let mut reply_ids: Vec<u32> = Vec::new();
        let stop = loop {
            if cancel() {
                break StopReason::Cancelled;
            }
            let recent = &reply_ids[reply_ids.len().saturating_sub(params.repeat_last_n)..];
            apply_repeat_penalty(&mut logits, recent, params.repeat_penalty);
            let next = sampler.sample(&logits);
            if stats.generated_tokens == 0 {
                stats.first_token_ms = ms(t0);
            }
            if next == tok.im_end || next == tok.end_of_text {
                break StopReason::EndOfTurn;
            }
            stats.generated_tokens += 1;
            reply_ids.push(next);
            let delta = utf8.push(tok.token_bytes(next));
            if !delta.is_empty() && !on_delta(&delta) {
                break StopReason::Cancelled;
            }
            if stats.generated_tokens >= budget {
                break StopReason::MaxTokens;
            }
            logits = self.feed(&[next])?;
        };
        if stop != StopReason::Cancelled {
            let rest = utf8.finish();
            if !rest.is_empty() {
                on_delta(&rest);
            }
        }
        stats.stop_reason = stop;
        stats.total_ms = ms(t0);
        Ok(stats)
    }

    /// Warms the cache between turns, e.g. while the reply is being spoken or the caller is
    /// talking: runs `messages` (usually the history ending with the assistant's reply) plus
    /// the opening `<|im_start|>user\n` of the next turn, so the next [`generate`] only has
    /// to run the caller's words. Returns the number of tokens run. A mismatch later only
    /// costs re-running from the first differing token.
    ///
    /// [`generate`]: ChatSession::generate
    pub fn prefill(
        &mut self,
        messages: &[ChatMessage],
        cancel: &dyn Fn() -> bool,
    ) -> Result<usize, LlmError> {
        if messages.is_empty() {
            return Ok(0);
        }
        let limit = self.model.max_context().saturating_sub(1);
        let (mut ids, _) = self.build_prompt(messages, limit)?;
        // Replace the assistant header by the next user turn's opener.
        let tok = self.model.tokenizer();
        let header_len = assistant_header(tok)?.len();
        ids.truncate(ids.len().saturating_sub(header_len));
        ids.push(tok.im_start);
        ids.extend(tok.encode_plain("user\n")?);
        if ids.len() > limit {
            return Ok(0);
        }
        let lcp = common_prefix(&self.cached_ids, &ids);
        self.cache.truncate(lcp);
        self.cached_ids.truncate(lcp);
        let mut run = 0;
        for chunk in ids[lcp..].chunks(PROMPT_CHUNK) {
            if cancel() {
                break;
            }
            self.feed(chunk)?;
            run += chunk.len();
        }
        Ok(run)
    }

    /// Runs `ids` through the model after the cached positions. On failure the cache is
    /// dropped so the next turn starts clean.
    fn feed(&mut self, ids: &[u32]) -> Result<Vec<f32>, LlmError> {
        match self.model.weights().forward(ids, &mut self.cache) {
            Ok(logits) => {
                self.cached_ids.extend_from_slice(ids);
                Ok(logits)
            }
            Err(e) => {
                self.reset();
                Err(e.into())
            }
        }
    }

    /// Encodes the conversation plus the assistant header, dropping the oldest non-system
    /// messages when it would exceed `limit` tokens. Returns the ids and how many messages
    /// were dropped.
    fn build_prompt(
        &mut self,
        messages: &[ChatMessage],
        limit: usize,
    ) -> Result<(Vec<u32>, usize), LlmError> {
        let tok = self.model.tokenizer();
        let vars = &self.variables;
        let (system, rest) = match messages.split_first() {
            Some((first, rest)) if first.role == Role::System => {
                (encode_message(tok, first, vars)?, rest)
            }
            _ => (Vec::new(), messages),
        };
        let encoded = rest
            .iter()
            .map(|m| encode_message(tok, m, vars))
            .collect::<Result<Vec<_>, _>>()?;
        let header = assistant_header(tok)?;
        let fixed = system.len() + header.len();
        let total_from = |start: usize| -> usize {
            fixed + encoded[start..].iter().map(Vec::len).sum::<usize>()
        };

        let mut start = match &self.trim {
            Some(t) if encoded.get(t.start) == Some(&t.first_ids) => t.start,
            _ => 0,
        };
        if total_from(start) > limit {
            // Cut down to three quarters of the limit so the next few turns fit without
            // moving the cut again (which would invalidate the cache each turn).
            let target = limit * 3 / 4;
            while start + 1 < encoded.len() && total_from(start) > target {
                start += 1;
            }
            while start + 1 < encoded.len() && rest[start].role != Role::User {
                start += 1;
            }
        }
        let total = total_from(start);
        if total > limit {
            return Err(LlmError::PromptTooLong {
                tokens: total,
                limit,
            });
        }
        self.trim = (start > 0).then(|| TrimPoint {
            start,
            first_ids: encoded[start].clone(),
        });
        let mut ids = Vec::with_capacity(total);
        ids.extend_from_slice(&system);
        encoded[start..]
            .iter()
            .for_each(|m| ids.extend_from_slice(m));
        ids.extend_from_slice(&header);
        Ok((ids, start))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_prefix_lengths() {
        assert_eq!(common_prefix(&[1, 2, 3], &[1, 2, 4, 5]), 2);
        assert_eq!(common_prefix(&[], &[1]), 0);
        assert_eq!(common_prefix(&[1, 2], &[1, 2, 3]), 2);
    }

    #[test]
    fn session_is_send() {
        fn assert_send<T: Send>() {}
        assert_send::<ChatSession>();
    }
}
