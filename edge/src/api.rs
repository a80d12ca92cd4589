//! What the worker accepts and answers, kept apart from the Workers runtime so it is tested
//! natively: request bodies become a 28x28 input or a 400 that says what is wrong.

use infer::preprocess::{ink_from_rgba, to_mnist};
use infer::{NUM_CLASSES, PIXELS};
use serde::{Deserialize, Serialize};

/// Largest canvas accepted, in pixels: 4 MiB of RGBA, parsed into 4 MiB and preprocessed in
/// 4 MiB more, well inside a Worker's 128 MB.
const MAX_CANVAS_PIXELS: usize = 1024 * 1024;
/// Largest body read: the largest canvas as JSON at four characters a value (`255,`) and
/// room for the rest. A larger one is refused (413) from its `Content-Length`, or, sent in
/// chunks, as soon as the chunks read pass this.
pub const MAX_BODY_BYTES: usize = 4 * 4 * MAX_CANVAS_PIXELS + 4096;

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

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, message)
    }

    fn too_large() -> Self {
        Self::new(413, format!("the body is larger than {MAX_BODY_BYTES} bytes"))
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
    #[serde(default, deserialize_with = "pixels")]
    pixels: Option<Vec<u8>>,
    /// RGBA bytes of a `width` x `height` canvas (e.g. `ImageData.data`).
    #[serde(default, deserialize_with = "rgba")]
    rgba: Option<Vec<u8>>,
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
    /// When the isolate that answered loaded it (ISO 8601).
    pub loaded_at: String,
    /// Milliseconds from the first request to a usable model (R2 read and decode).
    pub load_ms: f64,
    /// How many models the isolate that answered has loaded.
    pub loads: u32,
}

/// Parses a `/predict` body into the 28x28 input the model takes.
pub fn parse_predict(body: &[u8]) -> Result<[u8; PIXELS], ApiError> {
    let request: PredictRequest = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the body is not a predict request: {e}")))?;
    match request {
        PredictRequest { pixels: Some(grey), rgba: None, width: None, height: None } => {
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
            let ink = ink_from_rgba(&rgba, width, height).map_err(|e| ApiError::bad_request(e.to_string()))?;
            to_mnist(&ink, width, height).map_err(|e| ApiError::bad_request(e.to_string()))
        }
        _ => Err(ApiError::bad_request(
            "send either {\"pixels\": [784 values]} or {\"rgba\": [...], \"width\": W, \"height\": H}",
        )),
    }
}

/// A body read in chunks, refused as soon as it passes [`MAX_BODY_BYTES`].
#[derive(Default)]
pub struct BoundedBody(Vec<u8>);

impl BoundedBody {
    /// Refuses at once a body whose `Content-Length` says it is too large.
    pub fn expecting(content_length: Option<&str>) -> Result<Self, ApiError> {
        match content_length.map(|length| length.trim().parse::<u64>()) {
            Some(Ok(length)) if length > MAX_BODY_BYTES as u64 => Err(ApiError::too_large()),
            Some(Err(_)) => Err(ApiError::bad_request("Content-Length is not a number")),
            _ => Ok(Self::default()),
        }
    }

    pub fn push(&mut self, chunk: &[u8]) -> Result<(), ApiError> {
        if self.0.len() + chunk.len() > MAX_BODY_BYTES {
            return Err(ApiError::too_large());
        }
        self.0.extend_from_slice(chunk);
        Ok(())
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.0
    }
}

fn pixels<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<Vec<u8>>, D::Error> {
    deserializer.deserialize_seq(ByteValues("pixels")).map(Some)
}

fn rgba<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<Vec<u8>>, D::Error> {
    deserializer.deserialize_seq(ByteValues("rgba")).map(Some)
}

/// A JSON array of whole numbers 0-255 read straight into bytes (not into 8-byte floats
/// first), with the field's name in any error.
struct ByteValues(&'static str);

impl<'de> serde::de::Visitor<'de> for ByteValues {
    type Value = Vec<u8>;

    fn expecting(&self, f: &mut core::fmt::Formatter) -> core::fmt::Result {
        write!(f, "{} as an array of whole numbers 0-255", self.0)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut values: A) -> Result<Vec<u8>, A::Error> {
        let mut bytes = Vec::with_capacity(values.size_hint().unwrap_or(0).min(4 * MAX_CANVAS_PIXELS));
        while let Some(value) = values.next_element::<f64>()? {
            if value.fract() != 0.0 || !(0.0..=255.0).contains(&value) {
                let (field, i) = (self.0, bytes.len());
                return Err(serde::de::Error::custom(format!(
                    "{field}[{i}] is {value}; values must be whole numbers 0-255"
                )));
            }
            bytes.push(value as u8);
        }
        Ok(bytes)
    }
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
    fn refuses_a_body_past_the_limit_before_reading_it_whole() {
        let too_large = (MAX_BODY_BYTES + 1).to_string();
        assert_eq!(BoundedBody::expecting(Some(&too_large)).err().unwrap().status, 413);
        assert_eq!(BoundedBody::expecting(Some("lots")).err().unwrap().status, 400);

        // Sent in chunks with no length: refused at the chunk that passes the limit.
        let mut body = BoundedBody::expecting(None).unwrap();
        let chunk = vec![b' '; 1 << 20];
        let mut pushed = 0;
        let refused = loop {
            match body.push(&chunk) {
                Ok(()) => pushed += chunk.len(),
                Err(error) => break error,
            }
        };
        assert_eq!(refused.status, 413);
        assert!(pushed <= MAX_BODY_BYTES && pushed + chunk.len() > MAX_BODY_BYTES);
    }

    /// White paper is the longest JSON (every value `255`); a black stroke down the middle.
    #[test]
    fn the_largest_canvas_fits_in_the_largest_body_and_is_read() {
        let side = 1024;
        let pixel = |x: usize| if (500..520).contains(&x) { "0,0,0,255" } else { "255,255,255,255" };
        let rgba: Vec<&str> = (0..side * side).map(|i| pixel(i % side)).collect();
        let body = format!(r#"{{"rgba": [{}], "width": {side}, "height": {side}}}"#, rgba.join(","));
        assert!(body.len() <= MAX_BODY_BYTES, "{} bytes", body.len());
        let input = parse_predict(body.as_bytes()).unwrap();
        assert!(input.iter().any(|&v| v > 200), "the stroke survives preprocessing");
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
