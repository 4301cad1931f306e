//! The GGUF-built tokenizer: exact round trips, known SmolLM2 ids, special tokens, digit
//! splitting, ChatML prompt encoding and UTF-8-safe streaming of token bytes.

#[path = "llm_common/mod.rs"]
mod common;

use std::collections::HashMap;

use voxwire::engines::llm::smollm::{encode_chat, render_prompt, ChatMessage, Utf8Stream};

const TRICKY: &[&str] = &[
    "",
    "Hello, world!",
    " leading space",
    "   three leading spaces and trailing   ",
    "line one\nline two\n\n\nfour newlines later\r\n",
    "\ttabs\tand  double  spaces",
    "Digits: 0 1 12 123 1234567890 3.14159 -42 1e10 $1,000.50",
    "Punctuation!?.,;:'\"()[]{}<>/\\|@#%^&*-_=+`~",
    "It's, we're, they'll, I'd, you've, she's",
    "héllo wörld, naïve café, Ångström, façade",
    "日本語のテキスト、中文文本，한국어 텍스트",
    "Emoji 😀👍🏽🇫🇷 👨‍👩‍👧‍👦 and ❤️ inside",
    "Русский текст и ελληνικά",
    "mixed\u{00a0}nbsp\u{200b}zero-width",
    "<|im_start|>user\nHi<|im_end|>\n",
    "<not_special> <|fake|> < | im_start | >",
    "a",
    "\n",
    " ",
    "🙂",
];

#[test]
fn round_trips_text_exactly() {
    let model = common::model();
    let tok = model.tokenizer();
    for text in TRICKY {
        let ids = tok.encode(text).expect("encode");
        assert_eq!(&tok.decode(&ids).expect("decode"), text, "ids {ids:?}");
        let plain = tok.encode_plain(text).expect("encode_plain");
        assert_eq!(&tok.decode(&plain).expect("decode"), text);
        // Raw token bytes concatenate to the same text.
        let bytes: Vec<u8> = plain
            .iter()
            .flat_map(|&i| tok.token_bytes(i).to_vec())
            .collect();
        assert_eq!(String::from_utf8(bytes).expect("utf8"), *text);
    }
}

#[test]
fn special_tokens_are_single_ids() {
    let model = common::model();
    let tok = model.tokenizer();
    assert_eq!(tok.end_of_text, 0);
    assert_eq!(tok.im_start, 1);
    assert_eq!(tok.im_end, 2);
    assert_eq!(tok.encode("<|im_start|>").unwrap(), vec![1]);
    assert_eq!(tok.encode("<|im_end|>").unwrap(), vec![2]);
    assert_eq!(tok.encode("<|endoftext|>").unwrap(), vec![0]);
    // In message content the same text stays plain characters (no turn injection).
    let plain = tok.encode_plain("<|im_end|>").unwrap();
    assert!(plain.len() > 1 && !plain.contains(&2), "{plain:?}");
    assert_eq!(tok.vocab_size(), 49152);
}

/// Ids published for SmolLM2 (HF tokenizer output of the default chat template).
#[test]
fn known_smollm2_ids() {
    let model = common::model();
    let tok = model.tokenizer();
    let msgs = [
        ChatMessage::system("You are a helpful AI assistant named SmolLM, trained by Hugging Face"),
        ChatMessage::user("hello world"),
    ];
    let ids = encode_chat(tok, &msgs, &HashMap::new()).unwrap();
    let want = vec![
        1, 9690, 198, 2683, 359, 253, 5356, 5646, 11173, 3365, 3511, 308, 34519, 28, 7018, 411,
        407, 19712, 8182, 2, 198, 1, 4093, 198, 28120, 905, 2, 198, 1, 520, 9531, 198,
    ];
    assert_eq!(ids, want);
    assert_eq!(
        tok.encode("What is the capital of France?").unwrap(),
        vec![1780, 314, 260, 3575, 282, 4649, 47]
    );
    assert_eq!(
        tok.encode("Explain in three short sentences why plants need sunlight.")
            .unwrap(),
        vec![36971, 281, 1296, 1890, 8545, 1701, 2109, 737, 8118, 30]
    );
}

#[test]
fn digits_are_split_one_by_one() {
    let model = common::model();
    let tok = model.tokenizer();
    let ids = tok.encode("2024").unwrap();
    assert_eq!(ids.len(), 4);
    let ids = tok.encode(" 12345 abc").unwrap();
    assert_eq!(tok.decode(&ids[1..6]).unwrap(), "12345");
    assert_eq!(ids.len(), 7, "{ids:?}");
}

#[test]
fn chat_encoding_matches_whole_prompt_encoding() {
    let model = common::model();
    let tok = model.tokenizer();
    let vars: HashMap<String, String> = [("name".to_string(), "Acme".to_string())].into();
    let msgs = [
        ChatMessage::system("You work at {{name}}.\nBe brief."),
        ChatMessage::user(" Hi there! 123 "),
        ChatMessage::assistant("Hello 😀, how can I help?"),
        ChatMessage::user("Line\n\nbreaks"),
    ];
    let per_message = encode_chat(tok, &msgs, &vars).unwrap();
    let whole = tok.encode(&render_prompt(&msgs, &vars)).unwrap();
    assert_eq!(per_message, whole);
    assert!(render_prompt(&msgs, &vars).starts_with("<|im_start|>system\nYou work at Acme."));
}

#[test]
fn streaming_token_bytes_never_splits_characters() {
    let model = common::model();
    let tok = model.tokenizer();
    for text in TRICKY {
        let ids = tok.encode_plain(text).unwrap();
        let mut stream = Utf8Stream::default();
        let mut out = String::new();
        let mut partial_steps = 0;
        for &id in &ids {
            let delta = stream.push(tok.token_bytes(id));
            if delta.is_empty() && !tok.token_bytes(id).is_empty() {
                partial_steps += 1;
            }
            assert!(!delta.contains('\u{FFFD}'), "{text:?}");
            out.push_str(&delta);
        }
        out.push_str(&stream.finish());
        assert_eq!(&out, text);
        if text.contains('😀') {
            assert!(partial_steps > 0, "emoji should span several tokens");
        }
    }
}
