//! The score of an answer against the expected answer: how much of the expected answer the
//! answer contains, in [0, 1].
//!
//! Both texts are cut into words (runs of letters and digits, any script, lowercased); words
//! that carry no meaning on their own (English and Spanish articles, `of`, `is`, `de`, …) are
//! dropped. The score is the share of the expected answer's distinct words that appear in the
//! answer (recall). Against the expected answer "Lima", the answer "The capital of Peru is
//! Lima." scores 1 and "Cusco" 0; against "The chemical symbol for gold is Au", the answer "Au"
//! scores 0.25.
//!
//! Recall rather than F1 because LLMs answer in sentences: a correct sentence around a
//! one-word expected answer would score 0.33 by F1. The price: an answer that lists many
//! candidates scores high. An expected answer made only of such small words ("O", oxygen's
//! symbol, is also Spanish for "or") keeps them all, and so do the answer's.

use std::collections::HashSet;

/// Words that say nothing by themselves, dropped from both texts.
const FILLER: &[&str] = &[
    "a", "an", "the", "of", "is", "are", "was", "were", "it", "its", "to", "in", "on", "and", "or",
    "for", "by", "el", "la", "los", "las", "un", "una", "unos", "unas", "de", "del", "es", "son",
    "fue", "y", "o", "en", "por", "para", "al", "lo",
];

fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

fn meaningful(words: &[String]) -> HashSet<&str> {
    words
        .iter()
        .map(String::as_str)
        .filter(|w| !FILLER.contains(w))
        .collect()
}

/// The score of `answer` against `expected`, in [0, 1].
pub fn score(answer: &str, expected: &str) -> f64 {
    let expected_words = words(expected);
    let answer_words = words(answer);
    let (wanted, given) = match meaningful(&expected_words) {
        small_words_only if small_words_only.is_empty() => (
            expected_words.iter().map(String::as_str).collect(),
            answer_words.iter().map(String::as_str).collect(),
        ),
        wanted => (wanted, meaningful(&answer_words)),
    };
    if wanted.is_empty() {
        // No word at all ("?!"): nothing to find, nothing found.
        return 0.0;
    }
    let found = wanted.iter().filter(|w| given.contains(*w)).count();
    found as f64 / wanted.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_examples_hold() {
        assert_eq!(score("The capital of Peru is Lima.", "Lima"), 1.0);
        assert_eq!(score("Cusco", "Lima"), 0.0);
        assert_eq!(score("Au", "The chemical symbol for gold is Au"), 0.25);
        assert_eq!(score("LIMA!", "lima"), 1.0);
        assert_eq!(score("La capital es Lima", "Lima, Perú"), 0.5);
        assert_eq!(score("Perú", "perú"), 1.0);
        assert_eq!(score("El símbolo químico del oxígeno es O.", "O"), 1.0);
        assert_eq!(score("Es H", "O"), 0.0);
    }

    #[test]
    fn scores_stay_in_range_for_odd_texts() {
        for (answer, expected) in [
            ("", ""),
            ("", "the"),
            ("the", "the"),
            ("x", ""),
            ("🦀🦀", "🦀"),
            ("\0", "\0"),
        ] {
            let s = score(answer, expected);
            assert!((0.0..=1.0).contains(&s), "{answer:?} {expected:?}: {s}");
        }
        assert_eq!(score("the", "the"), 1.0);
        assert_eq!(score("a", "the"), 0.0);
        assert_eq!(score("?!", "?!"), 0.0);
    }
}
