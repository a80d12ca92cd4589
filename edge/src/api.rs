//! What the worker accepts and answers, kept apart from the Workers runtime so it is tested
//! natively: request bodies become a 28x28 input or a 400 that says what is wrong.

use infer::preprocess::{ink_from_rgba, to_mnist};
use infer::{NUM_CLASSES, PIXELS};
use serde::{Deserialize, Serialize};

/// Largest canvas accepted, in pixels: bounds the work one request can ask for.
const MAX_CANVAS_PIXELS: usize = 2048 * 2048;

/// An HTTP error with the message its JSON body carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: u16,
    pub message: String,
}

impl ApiError {
    pub fn new(status: u16, message: impl Into<String>) -> Self {
        ApiError { status, message: message.into() }
    }

    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, message)
    }

    /// `{"error": message}`.
    pub fn body(&self) -> String {
        serde_json::json!({ "error": self.message }).to_string()
    }
}

/// `POST /predict`: a ready 28x28 image, or a canvas to preprocess the way the page does.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PredictRequest {
    /// 784 grey levels, row-major, 0 = paper, 255 = ink.
    pixels: Option<Vec<f64>>,
    /// RGBA bytes of a `width` x `height` canvas (e.g. `ImageData.data`).
    rgba: Option<Vec<f64>>,
    width: Option<usize>,
    height: Option<usize>,
}

/// The model's answer.
#[derive(Serialize, Debug)]
pub struct PredictResponse<'a> {
    pub digit: usize,
    pub probabilities: [f32; NUM_CLASSES],
    pub model: &'a ModelInfo,
}

/// Which weights answered, and when and how fast they were loaded.
#[derive(Serialize, Debug, Clone)]
pub struct ModelInfo {
    /// SHA-256 of the R2 object, as `sha256sum artifacts/model.bin` prints it.
    pub sha256: String,
    /// When the Durable Object loaded it (ISO 8601).
    pub loaded_at: String,
    /// Milliseconds from the first request to a usable model (R2 read and decode).
    pub load_ms: f64,
    /// How many times this Durable Object has loaded a model.
    pub loads: u32,
}

/// Parses a `/predict` body into the 28x28 input the model takes.
pub fn parse_predict(body: &[u8]) -> Result<[u8; PIXELS], ApiError> {
    let request: PredictRequest = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the body is not a predict request: {e}")))?;
    match request {
        PredictRequest { pixels: Some(pixels), rgba: None, width: None, height: None } => {
            let grey = bytes("pixels", &pixels)?;
            grey.try_into().map_err(|grey: Vec<u8>| {
                ApiError::bad_request(format!("pixels needs {PIXELS} values (28x28), got {}", grey.len()))
            })
        }
        PredictRequest { pixels: None, rgba: Some(rgba), width: Some(width), height: Some(height) } => {
            if width.saturating_mul(height) > MAX_CANVAS_PIXELS {
                return Err(ApiError::bad_request(format!(
                    "a {width}x{height} canvas is larger than {MAX_CANVAS_PIXELS} pixels"
                )));
            }
            let rgba = bytes("rgba", &rgba)?;
            let ink = ink_from_rgba(&rgba, width, height).map_err(|e| ApiError::bad_request(e.to_string()))?;
            to_mnist(&ink, width, height).map_err(|e| ApiError::bad_request(e.to_string()))
        }
        _ => Err(ApiError::bad_request(
            "send either {\"pixels\": [784 values]} or {\"rgba\": [...], \"width\": W, \"height\": H}",
        )),
    }
}

/// Checks every value is a whole number 0-255.
fn bytes(field: &str, values: &[f64]) -> Result<Vec<u8>, ApiError> {
    values
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            if v.fract() == 0.0 && (0.0..=255.0).contains(&v) {
                Ok(v as u8)
            } else {
                Err(ApiError::bad_request(format!("{field}[{i}] is {v}; values must be whole numbers 0-255")))
            }
        })
        .collect()
}

/// Lower-case hex SHA-256, as `sha256sum` prints it.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether an `Authorization` header carries the admin token. Compares without an early
/// exit so the time taken does not reveal how much of a guess was right.
pub fn authorised(header: Option<&str>, token: &str) -> bool {
    let Some(given) = header.and_then(|h| h.strip_prefix("Bearer ")) else { return false };
    !token.is_empty()
        && given.len() == token.len()
        && given.bytes().zip(token.bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(body: &str) -> String {
        let e = parse_predict(body.as_bytes()).unwrap_err();
        assert_eq!(e.status, 400);
        e.message
    }

    #[test]
    fn takes_a_ready_image() {
        let body = serde_json::json!({ "pixels": vec![7; PIXELS] }).to_string();
        assert_eq!(parse_predict(body.as_bytes()).unwrap(), [7; PIXELS]);
    }

    #[test]
    fn takes_a_canvas_and_preprocesses_it() {
        let (width, height) = (40, 30);
        let mut rgba = vec![0u8; width * height * 4];
        for y in 5..25 {
            let at = (y * width + 20) * 4;
            rgba[at..at + 4].copy_from_slice(&[0, 0, 0, 255]);
        }
        let body = serde_json::json!({ "rgba": rgba, "width": width, "height": height }).to_string();
        let input = parse_predict(body.as_bytes()).unwrap();
        assert!(input.iter().any(|&v| v > 200), "the stroke survives preprocessing");
    }

    #[test]
    fn says_what_is_wrong_with_a_bad_body() {
        assert!(error("{not json").contains("not a predict request"));
        assert!(error(r#"{"pixels": [1, 2, 3]}"#).contains("784 values"));
        assert!(error(&format!(r#"{{"pixels": [{}256]}}"#, "0,".repeat(783))).contains("pixels[783] is 256"));
        assert!(error(r#"{"pixels": [-1]}"#).contains("pixels[0] is -1"));
        assert!(error(r#"{"pixels": [0.5]}"#).contains("whole numbers"));
        assert!(error(r#"{"pixels": "zeros"}"#).contains("not a predict request"));
        assert!(error(r#"{"image": []}"#).contains("not a predict request"));
        assert!(error(r#"{}"#).contains("send either"));
        assert!(error(r#"{"rgba": [0, 0, 0, 0], "width": 2, "height": 2}"#).contains("needs 16 bytes"));
        assert!(error(r#"{"rgba": [], "width": 100000, "height": 100000}"#).contains("larger than"));
        assert!(error(r#"{"rgba": [255, 255, 255, 255], "width": 1, "height": 1}"#).contains("no ink"));
    }

    #[test]
    fn admits_only_the_exact_token() {
        assert!(authorised(Some("Bearer s3cret"), "s3cret"));
        assert!(!authorised(Some("Bearer s3cre"), "s3cret"));
        assert!(!authorised(Some("s3cret"), "s3cret"));
        assert!(!authorised(None, "s3cret"));
        assert!(!authorised(Some("Bearer "), ""), "an unset token admits nobody");
    }

    #[test]
    fn hashes_like_sha256sum() {
        assert_eq!(sha256_hex(b"abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }
}
