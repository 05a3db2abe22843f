//! Inside a node container: serve one node on the bind-mounted Unix socket.

use std::panic::AssertUnwindSafe;
use std::path::Path;

use futures_util::FutureExt as _;
use tokio::net::UnixListener;

use super::protocol::{bytes_of, raw, read_frame, write_frame, Request, Response};
use crate::error::Error;
use crate::graph::JsonCall;
use crate::node::NodeError;

/// Serves `call` on `socket` until the process is stopped. Each connection carries one request
/// at a time; connections are served concurrently.
pub(crate) async fn serve(node: &'static str, call: JsonCall, socket: &Path) -> Result<(), Error> {
    let _ = std::fs::remove_file(socket);
    let listener = UnixListener::bind(socket).map_err(|e| {
        Error::io(
            format!("node `{node}` cannot listen on {}", socket.display()),
            e,
        )
    })?;
    loop {
        let (mut stream, _) = listener
            .accept()
            .await
            .map_err(|e| Error::io("accepting a runner connection", e))?;
        tokio::spawn(async move {
            while let Ok(Some(frame)) = read_frame(&mut stream).await {
                let response = handle(node, call, &frame).await;
                let body = serde_json::to_vec(&response).unwrap_or_default();
                if write_frame(&mut stream, &body).await.is_err() {
                    break;
                }
            }
        });
    }
}

async fn handle(node: &'static str, call: JsonCall, frame: &[u8]) -> Response {
    let request: Request = match serde_json::from_slice(frame) {
        Ok(r) => r,
        Err(e) => {
            return Response::Err(NodeError::permanent(format!(
                "node `{node}` got a malformed request: {e}"
            )))
        }
    };
    let input = bytes_of(&request.input);
    let state = request.state.as_deref().map(bytes_of);
    match AssertUnwindSafe(call(input, state)).catch_unwind().await {
        Ok(Ok((output, state))) => match (raw(&output), state.as_deref().map(raw).transpose()) {
            (Ok(output), Ok(state)) => Response::Ok { output, state },
            (Err(e), _) | (_, Err(e)) => Response::Err(NodeError::permanent(format!(
                "node `{node}` produced invalid JSON: {e}"
            ))),
        },
        Ok(Err(error)) => Response::Err(error),
        Err(_) => Response::Err(NodeError::panic(format!(
            "node `{node}` panicked in its container"
        ))),
    }
}
