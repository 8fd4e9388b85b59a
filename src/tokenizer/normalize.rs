//! BERT's text normalisation and pre-tokenisation (HuggingFace `BertNormalizer` +
//! `BertPreTokenizer`): clean the text, isolate CJK ideographs, strip accents and lowercase
//! when the model is uncased, then cut into words at whitespace and punctuation.

use unicode_general_category::{get_general_category, GeneralCategory as Gc};
use unicode_normalization::UnicodeNormalization;

/// Writes the normalised form of `text` into `out` (cleared first). `scratch` is reused
/// between calls so that steady-state normalisation allocates nothing.
pub fn normalize(text: &str, lowercase: bool, scratch: &mut String, out: &mut String) {
    out.clear();
    if !lowercase {
        clean_and_space_cjk(text, out);
        return;
    }
    scratch.clear();
    clean_and_space_cjk(text, scratch);
    if scratch.is_ascii() {
        // NFD is the identity on ASCII and nothing there is a combining mark.
        out.push_str(scratch);
        out.make_ascii_lowercase();
        return;
    }
    // HF order: NFD, drop non-spacing marks (the accents), then lowercase char by char.
    for c in scratch.nfd() {
        if c.is_ascii() {
            out.push(c.to_ascii_lowercase());
        } else if get_general_category(c) != Gc::NonspacingMark {
            out.extend(c.to_lowercase());
        }
    }
}

/// Drops NUL, U+FFFD and control/format/unassigned characters, turns whitespace into a plain
/// space, and surrounds every CJK ideograph with spaces so that it becomes a word of its own.
fn clean_and_space_cjk(text: &str, out: &mut String) {
    out.reserve(text.len());
    for c in text.chars() {
        if c.is_ascii() {
            match c {
                '\t' | '\n' | '\r' => out.push(' '),
                // The other ASCII controls (NUL included) are dropped.
                '\0'..='\x1f' | '\x7f' => {}
                _ => out.push(c),
            }
        } else if c == '\u{fffd}' || is_control(c) {
            continue;
        } else if c.is_whitespace() {
            out.push(' ');
        } else if is_cjk_ideograph(c) {
            out.push(' ');
            out.push(c);
            out.push(' ');
        } else {
            out.push(c);
        }
    }
}

/// Unicode "Other" categories (Cc, Cf, Co, Cs, Cn): what BERT's cleaner removes.
fn is_control(c: char) -> bool {
    matches!(
        get_general_category(c),
        Gc::Control | Gc::Format | Gc::PrivateUse | Gc::Surrogate | Gc::Unassigned
    )
}

/// The CJK Unified Ideographs blocks BERT treats as one-character words. Hiragana, katakana
/// and hangul are deliberately not in it (they are space-separated like Latin).
fn is_cjk_ideograph(c: char) -> bool {
    matches!(c as u32,
        0x4E00..=0x9FFF
        | 0x3400..=0x4DBF
        | 0x20000..=0x2A6DF
        | 0x2A700..=0x2B73F
        | 0x2B740..=0x2B81F
        | 0x2B820..=0x2CEAF
        | 0xF900..=0xFAFF
        | 0x2F800..=0x2FA1F)
}

/// ASCII punctuation (including symbols such as `$`, `+`, `^` that Unicode files under S*)
/// plus every Unicode P* character.
pub fn is_punctuation(c: char) -> bool {
    if c.is_ascii() {
        return c.is_ascii_punctuation();
    }
    matches!(
        get_general_category(c),
        Gc::ConnectorPunctuation
            | Gc::DashPunctuation
            | Gc::OpenPunctuation
            | Gc::ClosePunctuation
            | Gc::InitialPunctuation
            | Gc::FinalPunctuation
            | Gc::OtherPunctuation
    )
}

/// Calls `f` with each word of normalised text: runs of non-whitespace, with every
/// punctuation character a word of its own.
pub fn for_each_word(text: &str, mut f: impl FnMut(&str)) {
    let mut start = None;
    for (i, c) in text.char_indices() {
        let space = c.is_whitespace();
        if space || is_punctuation(c) {
            if let Some(s) = start.take() {
                f(&text[s..i]);
            }
            if !space {
                f(&text[i..i + c.len_utf8()]);
            }
        } else if start.is_none() {
            start = Some(i);
        }
    }
    if let Some(s) = start {
        f(&text[s..]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(s: &str) -> String {
        let (mut a, mut b) = (String::new(), String::new());
        normalize(s, true, &mut a, &mut b);
        b
    }

    fn words(s: &str) -> Vec<String> {
        let mut v = Vec::new();
        for_each_word(&norm(s), |w| v.push(w.to_string()));
        v
    }

    #[test]
    fn strips_accents_but_keeps_letters_without_decomposition() {
        assert_eq!(norm("Café ÆØÅ"), "cafe æøa");
        assert_eq!(norm("İ"), "i");
    }

    #[test]
    fn cleans_controls_and_whitespace() {
        assert_eq!(
            norm("a\0b\u{fffd}c\u{200d}d\te\u{3000}f\u{7}g"),
            "abcd e fg"
        );
    }

    #[test]
    fn cjk_and_punctuation_become_words() {
        assert_eq!(words("東京は"), ["東", "京", "は"]);
        assert_eq!(words("a+b, c$"), ["a", "+", "b", ",", "c", "$"]);
        assert_eq!(words("  "), Vec::<String>::new());
        assert_eq!(words("x«y»"), ["x", "«", "y", "»"]);
    }

    #[test]
    fn cased_models_keep_case_and_accents() {
        let (mut a, mut b) = (String::new(), String::new());
        normalize("Café", false, &mut a, &mut b);
        assert_eq!(b, "Café");
    }
}
