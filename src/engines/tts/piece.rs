//! A piece of a reply on its way to the voice, whatever the engine. The one place where reply
//! text becomes speech text: normalised (times, prices, abbreviations read as words) before any
//! engine sees it, while the piece keeps its text as written for the caller's screen and the
//! history. Where the splitter cut between two words, the voice is told the phrase goes on (a
//! comma, not the full stop a bare chunk gets) and the silence on both sides of the cut is
//! trimmed ([`Seam`]), so the pieces sound like one phrase.

use futures::stream::BoxStream;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use super::text::{ends_mid_phrase, normalize};
use super::TextToSpeech;
use crate::audio::seam::Seam;
use crate::engines::EngineError;

/// One chunk of a reply, as the splitter cut it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Piece {
    /// The text as written: what the caller reads and history keeps.
    pub text: String,
    /// Cut between two words: the next piece goes on with the same phrase.
    pub open: bool,
}

impl Piece {
    /// A chunk of a reply; `more` when more of the reply follows it.
    pub fn new(text: String, more: bool) -> Self {
        let open = more && ends_mid_phrase(&text);
        Piece { text, open }
    }

    /// What the voice is given: the normalised text, ending in a comma when the phrase goes on.
    pub fn spoken(&self) -> String {
        let mut text = normalize(&self.text);
        if self.open && ends_mid_phrase(&text) {
            text.push(',');
        }
        text
    }
}

/// Speaks `piece` with `tts`. `after_open`: the piece before was open, so this one goes on
/// with its phrase. The audio of an open piece's end and of the next piece's start is trimmed.
pub fn speak_piece(
    tts: &dyn TextToSpeech,
    piece: &Piece,
    after_open: bool,
    voice: Option<String>,
    cancel: CancellationToken,
) -> BoxStream<'static, Result<Vec<f32>, EngineError>> {
    let audio = tts.synthesize(piece.spoken(), voice, cancel);
    if !after_open && !piece.open {
        return audio;
    }
    let seam = Seam::new(tts.sample_rate(), after_open, piece.open);
    futures::stream::unfold((audio, Some(seam)), |(mut audio, seam)| async move {
        let mut seam = seam?;
        match audio.next().await {
            Some(Ok(chunk)) => {
                let out = seam.push(&chunk);
                Some((Ok(out), (audio, Some(seam))))
            }
            Some(Err(e)) => Some((Err(e), (audio, None))),
            None => Some((Ok(seam.finish()), (audio, None))),
        }
    })
    .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engines::tts::fake::FakeTts;

    #[test]
    fn open_pieces_are_cut_between_words_with_more_to_come() {
        assert!(Piece::new("Your table is booked".into(), true).open);
        assert!(!Piece::new("Your table is booked".into(), false).open);
        assert!(!Piece::new("Your table is booked,".into(), true).open);
        assert!(!Piece::new("Your table is booked.".into(), true).open);
    }

    #[test]
    fn the_voice_gets_normalised_text_the_piece_keeps_its_own() {
        let p = Piece::new("Booked for 10:30am".into(), true);
        assert_eq!(p.spoken(), "Booked for ten thirty AM,");
        assert_eq!(p.text, "Booked for 10:30am");
        let last = Piece::new("and costs $15.50.".into(), false);
        assert_eq!(last.spoken(), "and costs fifteen dollars and fifty cents.");
        let clause = Piece::new("Sure, I can book it for 2pm,".into(), true);
        assert_eq!(clause.spoken(), "Sure, I can book it for two PM,");
    }

    async fn collect(s: BoxStream<'static, Result<Vec<f32>, EngineError>>) -> Vec<f32> {
        s.map(|c| c.expect("audio")).concat().await
    }

    #[tokio::test]
    async fn only_the_edges_at_a_cut_are_trimmed() {
        // The fake voice is a tone per word with no silence, so nothing is trimmed, but each
        // piece is spoken, in full, at its normalised length ("$3" is two words).
        let tts = FakeTts::default();
        let cancel = CancellationToken::new();
        let open = Piece::new("It costs $3".into(), true);
        let a = collect(speak_piece(&tts, &open, false, None, cancel.clone())).await;
        assert_eq!(a.len(), 4 * 960);
        let next = Piece::new("per person.".into(), false);
        let b = collect(speak_piece(&tts, &next, true, None, cancel)).await;
        assert_eq!(b.len(), 2 * 960);
    }
}
