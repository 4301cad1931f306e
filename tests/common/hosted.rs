//! Provider entries pointing at a [`FakeProvider`], with short timeouts so fault tests are quick.

use voxwire::engines::providers::Providers;

use super::providers::FakeProvider;

/// The key the fake providers are given; tests check it never leaks.
pub const KEY: &str = "sk-test-9f8e7d6c5b4a3210";

/// `openai`, `deepgram` and `elevenlabs` entries served by `fake`, keys resolved.
pub fn providers(fake: &FakeProvider) -> Providers {
    let base = fake.base();
    let ws = fake.ws_base();
    let text = format!(
        r#"
[openai]
kind = "openai"
base_url = "{base}/v1"
api_key_env = "TEST_OPENAI_KEY"
stt_model = "whisper-test"
llm_model = "gpt-test"
tts_model = "tts-test"
tts_voice = "alloy"
language = "en"
timeout_ms = 600
stream_timeout_ms = 600
retries = 2
backoff_ms = 20
max_retry_wait_ms = 1500
[openai.voices]
alloy = "alloy"
nova = "nova"

[deepgram]
kind = "deepgram"
base_url = "{ws}/v1"
api_key_env = "TEST_DEEPGRAM_KEY"
stt_model = "nova-test"
language = "en"
timeout_ms = 600
stream_timeout_ms = 600
retries = 2
backoff_ms = 20
max_retry_wait_ms = 1500

[elevenlabs]
kind = "elevenlabs"
base_url = "{base}/v1"
api_key_env = "TEST_ELEVENLABS_KEY"
tts_model = "eleven-test"
tts_voice = "default-voice"
tts_sample_rate = 16000
timeout_ms = 600
stream_timeout_ms = 600
retries = 2
backoff_ms = 20
max_retry_wait_ms = 1500
[elevenlabs.voices]
rachel = "rachel-id"
"#
    );
    let mut p = Providers::parse(&text).unwrap();
    for name in ["openai", "deepgram", "elevenlabs"] {
        p.resolve_key(name, |_| Some(KEY.to_string())).unwrap();
    }
    p
}

/// The spec of one provider of [`providers`].
pub fn spec(fake: &FakeProvider, name: &str) -> voxwire::engines::providers::ProviderSpec {
    providers(fake).get(name).unwrap().clone()
}
