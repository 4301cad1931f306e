//! Benchmark of a call's summary on the local language model (what every ended call costs
//! beside the live ones): a five-turn call, summarised with two fields, five times; prints the
//! wall time of each and the median, the method and what was kept.
//!
//! `cargo bench --bench summary` (the local models must be fetched: `voxwire models fetch`).

use std::time::Instant;

use tokio_util::sync::CancellationToken;
use voxwire::engines::llm::ChatMessage;
use voxwire::engines::Engines;
use voxwire::summary::fields::parse_schema;
use voxwire::summary::make::make;
use voxwire::Config;

const CALL: [(&str, &str); 5] = [
    (
        "Hi, are you open on Saturday?",
        "We are open Monday to Friday, 8 am to 6 pm.",
    ),
    (
        "OK. How much is a check-up?",
        "A check-up costs 60 dollars.",
    ),
    (
        "Can I book one for Monday morning?",
        "Yes, Monday at 9 am is free.",
    ),
    (
        "My name is Alex Morgan.",
        "Thank you, Alex, you are booked.",
    ),
    (
        "Great, and where are you located?",
        "We are at 12 Harbour Street.",
    ),
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut config = Config::for_tests();
    config.stt = vec!["fake".into()];
    config.llm = vec!["local".into()];
    config.tts = vec!["fake".into()];
    config.offline = true;
    let engines = Engines::from_config(&config)?;
    let specs = parse_schema(&serde_json::json!({"type": "object", "properties": {
        "name": {"type": "string", "description": "The caller's name"},
        "day": {"type": "string", "description": "The day of the appointment"}
    }}))?;
    let messages: Vec<ChatMessage> = CALL
        .iter()
        .flat_map(|(caller, agent)| [ChatMessage::user(*caller), ChatMessage::assistant(*agent)])
        .collect();
    let rt = tokio::runtime::Runtime::new()?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "summary of a {}-turn call with {} fields, local model, {cores} cores",
        CALL.len(),
        specs.len()
    );
    let mut times = Vec::new();
    for i in 0..5 {
        let t = Instant::now();
        let made = rt.block_on(make(
            engines.llm.as_ref(),
            &format!("bench-{i}"),
            &messages,
            &specs,
            &CancellationToken::new(),
        ));
        let ms = t.elapsed().as_secs_f64() * 1000.0;
        times.push(ms);
        match made {
            Some(m) => println!(
                "run {i}: {ms:.0} ms, {}: {:?} {}",
                m.method.as_str(),
                m.text,
                m.fields
            ),
            None => println!("run {i}: {ms:.0} ms, no summary"),
        }
    }
    times.sort_by(f64::total_cmp);
    println!(
        "median {:.0} ms, fastest {:.0} ms, slowest {:.0} ms",
        times[2], times[0], times[4]
    );
    Ok(())
}
