//! What the edge worker reads from a request before the model sees it: a `/predict` body, and
//! a body arriving under a `Content-Length` header in chunks of any size. Each is the model's
//! input, or an error whose JSON body is valid JSON.
#![no_main]

use fuzz as _; // the bounded allocator

use edge::api::{ApiError, BoundedBody, MAX_BODY_BYTES, parse_predict};
use libfuzzer_sys::fuzz_target;

fn check(error: ApiError) {
    assert!(matches!(error.status, 400 | 413), "status {}", error.status);
    let body: serde_json::Value = serde_json::from_str(&error.body()).expect("error bodies are JSON");
    assert!(body["error"].is_string());
}

fuzz_target!(|input: &[u8]| {
    let Some((&choice, rest)) = input.split_first() else { return };
    if choice & 1 == 0 {
        if let Err(error) = parse_predict(rest) {
            check(error);
        }
        return;
    }
    // A Content-Length of the input's first bytes, then the rest in chunks of one size.
    let (header, body) = rest.split_at(rest.len().min(usize::from(choice >> 1) % 24));
    let mut bounded = match BoundedBody::expecting(std::str::from_utf8(header).ok()) {
        Ok(bounded) => bounded,
        Err(error) => return check(error),
    };
    let chunk = usize::from(choice >> 5) + 1;
    for piece in body.chunks(chunk) {
        if let Err(error) = bounded.push(piece) {
            return check(error);
        }
    }
    assert!(bounded.into_bytes().len() <= MAX_BODY_BYTES);
});
