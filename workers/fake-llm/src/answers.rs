//! The answer book: the `--answers` JSONL file, read once at start into a map so that answering
//! never touches the disk.

use anyhow::Context;
use serde::Deserialize;
use std::collections::HashMap;
use std::path::Path;

/// Questions mapped to the text the fake answers them with.
#[derive(Debug, Default)]
pub struct Answers {
    by_question: HashMap<String, String>,
}

/// One line of the file. Question sets name the answer `expected` or `answer`; both are read.
#[derive(Deserialize)]
struct Line {
    question: String,
    #[serde(alias = "answer")]
    expected: String,
}

impl Answers {
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the answers file {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("in the answers file {}", path.display()))
    }

    /// Reads JSONL text; blank lines are skipped, and a question seen twice keeps its last answer.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let mut by_question = HashMap::new();
        for (index, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let line: Line = serde_json::from_str(line).with_context(|| {
                format!(
                    "line {}: expected {{\"question\": \"...\", \"expected\": \"...\"}}",
                    index + 1
                )
            })?;
            by_question.insert(line.question.trim().to_owned(), line.expected);
        }
        Ok(Self { by_question })
    }

    /// The answer to `question`: the book's when it has one, else `Answer to: <question>`.
    ///
    /// Questions are compared trimmed, as clients often add a newline around the prompt.
    pub fn answer(&self, question: &str) -> String {
        match self.by_question.get(question.trim()) {
            Some(answer) => answer.clone(),
            None => format!("Answer to: {question}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_questions_get_their_answer_and_others_an_echo() {
        let answers = Answers::parse(
            "{\"question\": \"2+2?\", \"expected\": \"4\"}\n\
             \n\
             {\"question\": \" Capital of France? \", \"answer\": \"Paris\", \"id\": 7}\n",
        )
        .expect("valid JSONL");
        assert_eq!(answers.answer("2+2?"), "4");
        assert_eq!(answers.answer("Capital of France?\n"), "Paris");
        assert_eq!(answers.answer("Who?"), "Answer to: Who?");
    }

    #[test]
    fn a_bad_line_is_named() {
        let error = Answers::parse("{\"question\": \"q\", \"expected\": \"a\"}\n{\"question\": 1}")
            .expect_err("line 2 is not an answer");
        assert!(error.to_string().starts_with("line 2:"), "{error}");
    }

    #[test]
    fn a_missing_file_is_an_error() {
        let error = Answers::load(Path::new("/nonexistent/answers.jsonl")).expect_err("missing");
        assert!(
            error.to_string().contains("/nonexistent/answers.jsonl"),
            "{error}"
        );
    }
}
