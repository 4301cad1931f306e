//! Call recordings: both sides in one stereo WAV file, the caller on the left and what the
//! caller heard (the agent, the operator) on the right, on the caller's timeline.
//!
//! The timeline is the caller's audio as it arrives. Reply audio starts playing the moment it
//! is sent, like on the caller's device, and is queued until the caller's timeline reaches it;
//! a cut reply drops what was still queued, so the file keeps exactly what was heard. When the
//! caller sends no audio (a typed call, a client that stops streaming), the timeline follows the
//! clock with silence on the left, a second behind, so that a chunked client is never overtaken.
//!
//! The mixer runs on the call's task and never waits: it hands stereo frames to the file's own
//! writer task through a bounded queue, and counts what a stuck disk makes it drop. The writer
//! rewrites the WAV sizes every second, so a file is valid up to its last second even if the
//! process dies; at the end it writes them once more. WAV (16 kHz, 16-bit): every browser and
//! player takes it, it seeks by byte range without an index, and it needs no codec library;
//! it costs 64 KB a second (3.8 MB a minute), which retention bounds.

use std::collections::VecDeque;
use std::io::SeekFrom;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncSeekExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::audio::encode::to_i16;
use crate::audio::resample::StreamResampler;
use crate::audio::ENGINE_RATE;

/// Channels of a recording: the caller, then what the caller heard.
pub const CHANNELS: u16 = 2;
/// Bytes of a WAV header.
const HEADER: u64 = 44;
/// Chunks of frames queued for the writer; past that a chunk is dropped (and counted).
const QUEUE: usize = 256;
/// How far behind the clock the timeline may fall before silence fills it.
const SLACK: Duration = Duration::from_secs(1);
/// Longest reply audio held ahead of the timeline (a client that stopped streaming while the
/// agent talks on); older audio is dropped.
const MAX_AHEAD: usize = 120 * ENGINE_RATE as usize;

/// Where a call's recording lives.
/// Whether `id` can name a file: call ids are letters, digits, `_` and `-`.
pub fn safe_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

pub fn recording_path(dir: &Path, call_id: &str) -> PathBuf {
    dir.join(format!("{call_id}.wav"))
}

enum Chunk {
    /// Interleaved stereo frames.
    Frames(Vec<i16>),
    /// The caller opted out: the file goes.
    Discard,
}

/// Mixes a call's two sides on the caller's timeline and feeds the file's writer.
pub struct Mixer {
    tx: mpsc::Sender<Chunk>,
    /// What the caller will hear, from the timeline's present on.
    heard: VecDeque<f32>,
    resampler: Option<(u32, StreamResampler)>,
    /// Frames on the timeline so far.
    frames: u64,
    started: Instant,
    /// Chunks the writer could not take.
    pub dropped: u64,
}

impl Mixer {
    /// Starts recording into `path` (appending to the recording of an earlier stretch of the
    /// same call, if there is one). The writer is spawned on `tasks`.
    pub fn start(path: PathBuf, tasks: &tokio_util::task::TaskTracker) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        tasks.spawn(write_file(path, rx));
        Self {
            tx,
            heard: VecDeque::new(),
            resampler: None,
            frames: 0,
            started: Instant::now(),
            dropped: 0,
        }
    }

    fn send(&mut self, chunk: Vec<i16>) {
        if chunk.is_empty() {
            return;
        }
        if self.tx.try_send(Chunk::Frames(chunk)).is_err() {
            self.dropped += 1;
        }
    }

    /// Caller audio (16 kHz): the timeline moves on by its length.
    pub fn caller(&mut self, samples: &[f32]) {
        let mut out = Vec::with_capacity(samples.len() * 2);
        for &s in samples {
            out.push(to_i16(s));
            out.push(to_i16(self.heard.pop_front().unwrap_or(0.0)));
        }
        self.frames += samples.len() as u64;
        self.send(out);
    }

    /// Reply audio as it is sent: heard from the timeline's present on, after what is queued.
    pub fn heard(&mut self, samples: &[f32], rate: u32) {
        let resampled;
        let samples = if rate == ENGINE_RATE {
            samples
        } else {
            if self.resampler.as_ref().is_none_or(|(r, _)| *r != rate) {
                self.resampler = StreamResampler::new(rate, ENGINE_RATE)
                    .ok()
                    .map(|s| (rate, s));
            }
            let Some((_, r)) = self.resampler.as_mut() else {
                return;
            };
            resampled = r.push(samples);
            &resampled
        };
        self.heard.extend(samples);
        if self.heard.len() > MAX_AHEAD {
            let extra = self.heard.len() - MAX_AHEAD;
            self.heard.drain(..extra);
        }
    }

    /// A reply was cut: what was still queued was never heard.
    pub fn cut(&mut self) {
        self.heard.clear();
    }

    /// Fills the timeline with silence on the caller's side up to the clock less `slack`.
    pub fn catch_up(&mut self, now: Instant) {
        self.fill_to(now, SLACK);
    }

    fn fill_to(&mut self, now: Instant, slack: Duration) {
        let due = now
            .saturating_duration_since(self.started)
            .saturating_sub(slack);
        let due = (due.as_secs_f64() * f64::from(ENGINE_RATE)) as u64;
        let mut missing = due.saturating_sub(self.frames);
        while missing > 0 {
            let n = missing.min(u64::from(ENGINE_RATE)) as usize;
            self.caller(&vec![0.0; n]);
            missing -= n as u64;
        }
    }

    /// The call ended: the timeline runs to now, and what was not yet heard is not kept.
    pub fn finish(mut self, now: Instant) {
        self.fill_to(now, Duration::ZERO);
        if self.dropped > 0 {
            tracing::warn!(
                chunks = self.dropped,
                "the recording lost audio: the disk did not keep up"
            );
        }
    }

    /// The caller opted out: the recording is deleted.
    pub fn discard(self) {
        // Waits for room: the file must go even when the queue is full.
        let tx = self.tx.clone();
        tokio::spawn(async move {
            let _ = tx.send(Chunk::Discard).await;
        });
    }
}

/// The 44-byte header of a 16 kHz stereo 16-bit WAV holding `data` bytes.
fn header(data: u32) -> [u8; HEADER as usize] {
    let rate = ENGINE_RATE;
    let block = CHANNELS * 2;
    let mut h = [0u8; HEADER as usize];
    h[0..4].copy_from_slice(b"RIFF");
    h[4..8].copy_from_slice(&data.saturating_add(36).to_le_bytes());
    h[8..12].copy_from_slice(b"WAVE");
    h[12..16].copy_from_slice(b"fmt ");
    h[16..20].copy_from_slice(&16u32.to_le_bytes());
    h[20..22].copy_from_slice(&1u16.to_le_bytes());
    h[22..24].copy_from_slice(&CHANNELS.to_le_bytes());
    h[24..28].copy_from_slice(&rate.to_le_bytes());
    h[28..32].copy_from_slice(&(rate * u32::from(block)).to_le_bytes());
    h[32..34].copy_from_slice(&block.to_le_bytes());
    h[34..36].copy_from_slice(&16u16.to_le_bytes());
    h[36..40].copy_from_slice(b"data");
    h[40..44].copy_from_slice(&data.to_le_bytes());
    h
}

/// Writes a recording from its queue until the call drops the mixer.
async fn write_file(path: PathBuf, mut rx: mpsc::Receiver<Chunk>) {
    if let Err(e) = write(&path, &mut rx).await {
        tracing::warn!(path = %path.display(), error = %e, "cannot write the call's recording");
        // Drain, so the call never finds the queue full because of a dead disk.
        while rx.recv().await.is_some() {}
    }
}

async fn write(path: &Path, rx: &mut mpsc::Receiver<Chunk>) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        tokio::fs::create_dir_all(dir).await?;
    }
    let mut file = tokio::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(path)
        .await?;
    // An earlier stretch of the call: go on after its audio (whole frames only).
    let existing = file.metadata().await?.len();
    let frame = u64::from(CHANNELS) * 2;
    let mut data = if existing > HEADER {
        (existing - HEADER) / frame * frame
    } else {
        0
    };
    let max_data = u64::from(u32::MAX) - 36;
    file.seek(SeekFrom::Start(0)).await?;
    file.write_all(&header(data as u32)).await?;
    file.seek(SeekFrom::Start(HEADER + data)).await?;
    let mut since_header = 0u64;
    let bytes_per_second = u64::from(ENGINE_RATE) * frame;
    while let Some(chunk) = rx.recv().await {
        let frames = match chunk {
            Chunk::Frames(f) => f,
            Chunk::Discard => {
                drop(file);
                tokio::fs::remove_file(path).await?;
                while rx.recv().await.is_some() {}
                return Ok(());
            }
        };
        let bytes: Vec<u8> = frames.iter().flat_map(|s| s.to_le_bytes()).collect();
        if data + bytes.len() as u64 > max_data {
            continue;
        }
        file.write_all(&bytes).await?;
        data += bytes.len() as u64;
        since_header += bytes.len() as u64;
        if since_header >= bytes_per_second {
            since_header = 0;
            update_header(&mut file, data).await?;
        }
    }
    update_header(&mut file, data).await?;
    file.sync_all().await
}

async fn update_header(file: &mut tokio::fs::File, data: u64) -> std::io::Result<()> {
    let end = file.stream_position().await?;
    file.seek(SeekFrom::Start(0)).await?;
    file.write_all(&header(data as u32)).await?;
    file.seek(SeekFrom::Start(end)).await?;
    file.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh folder for one test.
    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("voxwire-rec-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn read(path: &Path) -> (u16, u32, Vec<i16>) {
        let reader = hound::WavReader::open(path).unwrap();
        let spec = reader.spec();
        let samples = reader.into_samples::<i16>().map(|s| s.unwrap()).collect();
        (spec.channels, spec.sample_rate, samples)
    }

    #[tokio::test]
    async fn both_sides_on_the_callers_timeline_and_a_cut_reply_stops_there() {
        let path = recording_path(&scratch("call_x"), "call_x");
        let tasks = tokio_util::task::TaskTracker::new();
        let mut m = Mixer::start(path.clone(), &tasks);
        m.caller(&[0.5; 1600]);
        // A reply of 0.3 s at 22.05 kHz, sent at once: heard over the next 0.3 s of the caller.
        m.heard(&[0.25; 6615], 22_050);
        m.caller(&[0.0; 1600]);
        m.cut();
        m.caller(&[0.0; 1600]);
        drop(m);
        tasks.close();
        tasks.wait().await;
        let (channels, rate, samples) = read(&path);
        assert_eq!((channels, rate), (2, 16_000));
        assert_eq!(samples.len(), 3 * 1600 * 2);
        let left: Vec<i16> = samples.iter().step_by(2).copied().collect();
        let right: Vec<i16> = samples.iter().skip(1).step_by(2).copied().collect();
        assert!(left[..1600].iter().all(|&s| s > 16_000));
        assert!(left[1600..].iter().all(|&s| s == 0));
        assert!(right[..1600].iter().all(|&s| s == 0));
        // The reply plays from the moment it was sent, until the cut.
        let loud = right[1600..3200].iter().filter(|&&s| s > 6_000).count();
        assert!(loud > 1400, "{loud}");
        assert!(right[3200..].iter().all(|&s| s == 0));
    }

    #[tokio::test]
    async fn a_later_stretch_appends_and_a_discarded_recording_is_gone() {
        let path = recording_path(&scratch("call_y"), "call_y");
        for _ in 0..2 {
            let tasks = tokio_util::task::TaskTracker::new();
            let mut m = Mixer::start(path.clone(), &tasks);
            m.caller(&[0.1; 800]);
            drop(m);
            tasks.close();
            tasks.wait().await;
        }
        assert_eq!(read(&path).2.len(), 2 * 800 * 2);
        let tasks = tokio_util::task::TaskTracker::new();
        let mut m = Mixer::start(path.clone(), &tasks);
        m.caller(&[0.1; 800]);
        m.discard();
        tasks.close();
        tasks.wait().await;
        assert!(!path.exists());
    }

    #[tokio::test(start_paused = true)]
    async fn without_caller_audio_the_clock_moves_the_timeline() {
        let path = recording_path(&scratch("call_z"), "call_z");
        let tasks = tokio_util::task::TaskTracker::new();
        let mut m = Mixer::start(path.clone(), &tasks);
        m.heard(&[0.25; 16_000], 16_000);
        tokio::time::advance(Duration::from_millis(3_000)).await;
        m.catch_up(Instant::now());
        assert_eq!(m.frames, 32_000);
        tokio::time::advance(Duration::from_millis(500)).await;
        m.finish(Instant::now());
        tasks.close();
        tasks.wait().await;
        let (_, _, samples) = read(&path);
        assert_eq!(samples.len(), 56_000 * 2);
        let right: Vec<i16> = samples.iter().skip(1).step_by(2).copied().collect();
        assert!(right[..16_000].iter().all(|&s| s > 6_000));
        assert!(right[16_000..].iter().all(|&s| s == 0));
    }
}
