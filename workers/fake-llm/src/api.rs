//! The request and response shapes of the two APIs the fake speaks: OpenAI-compatible chat
//! completions and Gemini's `generateContent`. Requests are read only as far as the fake needs
//! (the model and the question); any other field is ignored, as a real server would accept it.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// Which API a request came through; named so in `GET /calls`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Api {
    OpenAi,
    Gemini,
}

/// What either API's request comes down to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prompt {
    pub model: String,
    pub question: String,
}

#[derive(Deserialize)]
struct ChatRequest {
    model: String,
    messages: Vec<ChatMessage>,
}

#[derive(Deserialize)]
struct ChatMessage {
    role: String,
    /// Absent or null on assistant messages that only call tools; only the user's must be text.
    content: Option<String>,
}

#[derive(Deserialize)]
struct GenerateRequest {
    contents: Vec<GeminiContent>,
}

#[derive(Deserialize)]
struct GeminiContent {
    parts: Vec<GeminiPart>,
}

#[derive(Deserialize)]
struct GeminiPart {
    /// Absent on parts that carry something else (inline data, function calls).
    text: Option<String>,
}

/// `POST /v1/chat/completions`: the question is the last user message.
pub fn parse_openai(body: &[u8]) -> Result<Prompt, String> {
    let request: ChatRequest = serde_json::from_slice(body)
        .map_err(|error| format!("not a chat completion request: {error}"))?;
    let question = request
        .messages
        .into_iter()
        .rev()
        .find(|message| message.role == "user")
        .and_then(|message| message.content)
        .ok_or("no message with role \"user\" and text content")?;
    Ok(Prompt {
        model: request.model,
        question,
    })
}

/// `POST /v1beta/models/<model>:generateContent`: the question is the text of the last content.
pub fn parse_gemini(model_and_method: &str, body: &[u8]) -> Result<Prompt, String> {
    let model = match model_and_method.rsplit_once(':') {
        Some((model, "generateContent")) if !model.is_empty() => model,
        _ => {
            return Err(format!(
                "expected models/<model>:generateContent, got models/{model_and_method}"
            ))
        }
    };
    let request: GenerateRequest = serde_json::from_slice(body)
        .map_err(|error| format!("not a generateContent request: {error}"))?;
    let last = request.contents.last().ok_or("no contents")?;
    let texts: Vec<&str> = last
        .parts
        .iter()
        .filter_map(|part| part.text.as_deref())
        .collect();
    if texts.is_empty() {
        return Err("the last content has no text part".to_owned());
    }
    Ok(Prompt {
        model: model.to_owned(),
        // Gemini reads consecutive text parts as one text, so they are joined as they are.
        question: texts.concat(),
    })
}

/// A chat completion carrying `answer`. `created` is in Unix seconds: some clients require it.
pub fn openai_answer(id: u64, created: u64, prompt: &Prompt, answer: &str) -> Value {
    let (prompt_tokens, completion_tokens) = (words(&prompt.question), words(answer));
    json!({
        "id": format!("chatcmpl-fake-{id}"),
        "object": "chat.completion",
        "created": created,
        "model": prompt.model,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": answer},
            "finish_reason": "stop",
        }],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    })
}

/// A `generateContent` response carrying `answer`.
pub fn gemini_answer(prompt: &Prompt, answer: &str) -> Value {
    let (prompt_tokens, answer_tokens) = (words(&prompt.question), words(answer));
    json!({
        "candidates": [{
            "content": {"role": "model", "parts": [{"text": answer}]},
            "finishReason": "STOP",
        }],
        "usageMetadata": {
            "promptTokenCount": prompt_tokens,
            "candidatesTokenCount": answer_tokens,
            "totalTokenCount": prompt_tokens + answer_tokens,
        },
        "modelVersion": prompt.model,
    })
}

/// The error body of both APIs: Gemini's shape, whose `error.message` OpenAI clients read too.
pub fn error_body(code: u16, status: &str, message: &str) -> Value {
    json!({"error": {"code": code, "status": status, "message": message}})
}

/// Token counts are words: enough for tests that check usage adds up.
fn words(text: &str) -> usize {
    text.split_whitespace().count()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prompt(model: &str, question: &str) -> Prompt {
        Prompt {
            model: model.to_owned(),
            question: question.to_owned(),
        }
    }

    #[test]
    fn openai_question_is_the_last_user_message() {
        let body = br#"{"model": "gpt-x", "temperature": 0, "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "first"},
            {"role": "assistant", "content": null},
            {"role": "user", "content": "What is 2+2?"},
            {"role": "assistant", "content": "thinking"}]}"#;
        assert_eq!(parse_openai(body), Ok(prompt("gpt-x", "What is 2+2?")));
    }

    #[test]
    fn openai_requests_of_another_shape_are_refused() {
        for body in [
            &br"not json"[..],
            br#"{"messages": [{"role": "user", "content": "q"}]}"#,
            br#"{"model": "m", "messages": [{"role": "system", "content": "s"}]}"#,
            br#"{"model": "m", "messages": [{"role": "user", "content": [{"type": "image"}]}]}"#,
            br#"{"model": "m", "messages": [{"role": "user"}]}"#,
        ] {
            assert!(
                parse_openai(body).is_err(),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn gemini_question_is_the_text_of_the_last_content() {
        let body = br#"{"generationConfig": {"temperature": 0}, "contents": [
            {"role": "user", "parts": [{"text": "earlier"}]},
            {"role": "user", "parts": [{"text": "What is "}, {"inlineData": {}}, {"text": "2+2?"}]}]}"#;
        let parsed = parse_gemini("gemini-2.0-flash:generateContent", body);
        assert_eq!(parsed, Ok(prompt("gemini-2.0-flash", "What is 2+2?")));
    }

    #[test]
    fn gemini_requests_of_another_shape_or_method_are_refused() {
        let good = br#"{"contents": [{"parts": [{"text": "q"}]}]}"#;
        assert!(parse_gemini("m:streamGenerateContent", good).is_err());
        assert!(parse_gemini(":generateContent", good).is_err());
        assert!(parse_gemini("m", good).is_err());
        for body in [
            &br"{"[..],
            br#"{"contents": []}"#,
            br#"{"contents": [{"parts": [{"inlineData": {}}]}]}"#,
            br#"{"contents": [{"parts": "q"}]}"#,
        ] {
            let parsed = parse_gemini("m:generateContent", body);
            assert!(parsed.is_err(), "{}", String::from_utf8_lossy(body));
        }
    }

    #[test]
    fn usage_counts_words() {
        let openai = openai_answer(3, 0, &prompt("m", "two words"), "three words here");
        assert_eq!(openai["id"], "chatcmpl-fake-3");
        assert_eq!(openai["usage"]["total_tokens"].to_string(), "5");
        let gemini = gemini_answer(&prompt("m", "two words"), "three words here");
        assert_eq!(gemini["usageMetadata"]["totalTokenCount"].to_string(), "5");
    }
}
