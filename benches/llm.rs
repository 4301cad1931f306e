//! Benchmark of the SmolLM engine: load time and memory, prompt speed, time to first token
//! on the first and fifth turn of a conversation (cache reused), generation speed.
//!
//! `cargo bench --bench llm -- [packed|f32|f16|quantized ...]` (default: packed f32);
//! `VOXWIRE_LLM_THREADS` sets the packed format's threads (default: one per core).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use voxwire::engines::llm::smollm::{
    default_model_path, ChatMessage, GenerateParams, LoadOptions, SmolLm, WeightFormat,
};

const SYSTEM: &str = "You are Sam, the receptionist of Bright Smile Dental. Reply in one or two \
short sentences. Opening hours: Monday to Friday, 8 am to 6 pm. Address: 12 Harbour Street. \
A check-up costs 60 dollars. You can book, move or cancel appointments and take messages for \
the dentists, Dr. Lee and Dr. Patel. If you do not know something, offer to take a message.";

const TURNS: [&str; 5] = [
    "Hi, are you open on Saturday?",
    "OK. How much is a check-up?",
    "Can I book one for Monday morning?",
    "My name is Alex Morgan.",
    "Great, and where are you located?",
];

fn rss_mb() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .map_or(f64::NAN, |kb| kb / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// CPU time this process has used (user and system), in ms: with one thread, what a pass
/// costs on an idle machine whatever else runs on this one.
fn cpu_ms() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (in parentheses): utime and stime are the 12th and 13th.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<f64> = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|v| v.parse().ok())
        .collect();
    // Clock ticks of 10 ms (USER_HZ is 100 on Linux).
    f.iter().sum::<f64>() * 10.0
}

fn run(path: &Path, format: WeightFormat) -> Result<(), Box<dyn std::error::Error>> {
    let t0 = Instant::now();
    // The packed format's threads, as the server takes them (0 or unset: one per core).
    let threads = std::env::var("VOXWIRE_LLM_THREADS")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(0);
    let options = LoadOptions {
        weight_format: format,
        threads,
        ..LoadOptions::default()
    };
    let model = Arc::new(SmolLm::load_with(path, &options)?);
    let load_ms = t0.elapsed().as_secs_f64() * 1000.0;
    let (rss, peak) = rss_mb();
    println!(
        "== {format:?}{} ==",
        model.kernels().map_or(String::new(), |k| format!(" ({k})"))
    );
    println!("load: {load_ms:.0} ms, RSS after load {rss:.0} MB (peak {peak:.0} MB)");

    // Single forward passes, repeated: the minimum is what the code can do, the median what
    // it did on this (possibly busy) machine.
    // The CPU time per pass (all threads) is what the passes cost whatever else runs here.
    for (pos, n, repeats) in [(300, 1, 200), (328, 20, 20)] {
        // The cache is filled before the timed passes: its cost is measured apart and removed.
        let cpu0 = cpu_ms();
        model.time_forward_ms(pos, n, 1)?;
        let cpu1 = cpu_ms();
        let mut t = model.time_forward_ms(pos, n, repeats + 1)?;
        let cpu = ((cpu_ms() - cpu1) - (cpu1 - cpu0)) / repeats as f64;
        t.sort_by(f64::total_cmp);
        let (min, median) = (t[0], t[t.len() / 2]);
        println!(
            "forward of {n} token{} after {pos}: min {min:.1} ms, median {median:.1} ms \
             ({:.0} tok/s at the median), CPU {cpu:.1} ms per pass",
            if n == 1 { "" } else { "s" },
            n as f64 * 1000.0 / median
        );
    }

    let params = GenerateParams {
        max_tokens: 40,
        temperature: 0.0,
        ..GenerateParams::default()
    };
    // Prompt speed: a fresh session, the whole prompt, stop after the first token.
    let mut session = model.new_session();
    let first = [ChatMessage::system(SYSTEM), ChatMessage::user(TURNS[0])];
    let one = GenerateParams {
        max_tokens: 1,
        ..params.clone()
    };
    let st = session.generate(&first, &one, &|| false, &mut |_| true)?;
    println!(
        "prompt: {} tokens in {:.0} ms = {:.0} tok/s",
        st.prompt_tokens,
        st.first_token_ms,
        st.prompt_tokens as f64 / (st.first_token_ms / 1000.0)
    );

    // A five-turn conversation in one session; then again, warming the cache between
    // turns with `prefill` (as the server can while the reply is spoken).
    let mut history = Vec::new();
    for warm in [false, true] {
        println!(
            "-- conversation{} --",
            if warm {
                " with prefill between turns"
            } else {
                ""
            }
        );
        let mut session = model.new_session();
        history = vec![ChatMessage::system(SYSTEM)];
        let (mut gen_tokens, mut gen_ms) = (0usize, 0.0f64);
        for (i, user) in TURNS.iter().enumerate() {
            history.push(ChatMessage::user(*user));
            let mut reply = String::new();
            let st = session.generate(&history, &params, &|| false, &mut |d| {
                reply.push_str(d);
                true
            })?;
            println!(
                "turn {}: prompt {} (cached {}), first token {:.0} ms, {} tokens in {:.0} ms  | {}",
                i + 1,
                st.prompt_tokens,
                st.cached_tokens,
                st.first_token_ms,
                st.generated_tokens,
                st.total_ms,
                reply.replace('\n', " ")
            );
            if st.generated_tokens > 1 {
                gen_tokens += st.generated_tokens - 1;
                gen_ms += st.total_ms - st.first_token_ms;
            }
            history.push(ChatMessage::assistant(reply));
            if warm {
                let t = Instant::now();
                let n = session.prefill(&history, &|| false)?;
                println!(
                    "        prefill {n} tokens in {:.0} ms",
                    t.elapsed().as_secs_f64() * 1000.0
                );
            }
        }
        println!(
            "generation: {gen_tokens} tokens in {gen_ms:.0} ms = {:.1} tok/s",
            gen_tokens as f64 / (gen_ms / 1000.0)
        );
        let (rss, peak) = rss_mb();
        println!(
            "RSS {rss:.0} MB (peak {peak:.0} MB), session cache {:.1} MB",
            session.cache_memory_bytes() as f64 / 1e6
        );
    }
    // Fresh session over the same five-turn history: the cost the cache saves.
    let mut fresh = model.new_session();
    history.truncate(history.len().saturating_sub(1));
    let st = fresh.generate(&history, &one, &|| false, &mut |_| true)?;
    println!(
        "turn 5 without cache: prompt {} tokens, first token {:.0} ms",
        st.prompt_tokens, st.first_token_ms
    );
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path: PathBuf = default_model_path();
    // Cargo passes `--bench`; only the other arguments name formats.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let mut formats = Vec::new();
    for arg in &args {
        formats.push(arg.parse::<WeightFormat>()?);
    }
    if let [only] = formats.as_slice() {
        return run(&path, *only);
    }
    // One process per format, so that memory figures are not mixed up.
    let names = if args.is_empty() {
        vec!["packed".to_string(), "f32".to_string()]
    } else {
        args
    };
    let exe = std::env::current_exe()?;
    for name in names {
        let status = std::process::Command::new(&exe).arg(&name).status()?;
        if !status.success() {
            return Err(format!("bench {name} failed: {status}").into());
        }
    }
    Ok(())
}
