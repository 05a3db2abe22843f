//! The wire between the runner and a node container: length-prefixed JSON frames over the Unix
//! socket bind-mounted into the container (never a network address).

use axum::body::Bytes;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::node::NodeError;

/// Largest frame either side accepts: inputs and outputs cross the boundary with a size limit.
pub(crate) const MAX_FRAME: usize = 16 * 1024 * 1024;

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Request {
    pub(crate) input: Box<serde_json::value::RawValue>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) state: Option<Box<serde_json::value::RawValue>>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Response {
    Ok {
        output: Box<serde_json::value::RawValue>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        state: Option<Box<serde_json::value::RawValue>>,
    },
    Err(NodeError),
}

pub(crate) fn raw(bytes: &[u8]) -> Result<Box<serde_json::value::RawValue>, String> {
    let text = std::str::from_utf8(bytes).map_err(|e| e.to_string())?;
    serde_json::value::RawValue::from_string(text.to_owned()).map_err(|e| e.to_string())
}

pub(crate) fn bytes_of(raw: &serde_json::value::RawValue) -> Bytes {
    Bytes::copy_from_slice(raw.get().as_bytes())
}

pub(crate) async fn write_frame<W: AsyncWriteExt + Unpin>(
    w: &mut W,
    body: &[u8],
) -> std::io::Result<()> {
    if body.len() > MAX_FRAME {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "frame of {} bytes is over the {MAX_FRAME}-byte limit",
                body.len()
            ),
        ));
    }
    let mut buf = Vec::with_capacity(4 + body.len());
    buf.extend_from_slice(&(body.len() as u32).to_be_bytes());
    buf.extend_from_slice(body);
    w.write_all(&buf).await
}

/// Reads one frame; `Ok(None)` at a clean end of stream.
pub(crate) async fn read_frame<R: AsyncReadExt + Unpin>(
    r: &mut R,
) -> std::io::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("frame of {len} bytes is over the {MAX_FRAME}-byte limit"),
        ));
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).await?;
    Ok(Some(body))
}
