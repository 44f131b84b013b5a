//! Arrow Flight SQL: the Arrow ecosystem's own protocol for query answers
//! (gRPC), so ADBC and JDBC drivers, polars and BI tools connect with no
//! code of ours. It is a second front door to the same house: the caller
//! is verified as over HTTPS, each statement becomes the request the HTTP
//! API takes ([`statement`]) and is answered by the same path (policy,
//! plan, disclosure control, DP spend, audit), and the answer's Arrow IPC
//! bytes are cut into Flight messages as they are ([`frames`]).
//!
//! It listens on its own port (`flight.listen`), with the HTTPS listener's
//! TLS, and is off unless configured.

mod frames;
mod metadata;
mod parked;
mod service;
mod statement;

use std::path::PathBuf;
use std::time::Duration;

use actix_web::web;
use anyhow::Context;
use arrow_flight::flight_service_server::FlightServiceServer;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Identity, Server, ServerTlsConfig};

use crate::http::AppState;
use crate::util::runtime::OwnedRuntime;

/// The largest message a client may send (statements and bound values are
/// small; Sluice takes no uploads over Flight).
const MAX_REQUEST_BYTES: usize = 1 << 20;

/// A running Flight SQL listener.
pub struct Running {
    pub port: u16,
    stop: tokio::sync::oneshot::Sender<()>,
    served: tokio::task::JoinHandle<()>,
    /// Its own threads, one per core: TLS and framing for every Flight
    /// client, apart from the runtime that started the server.
    _runtime: OwnedRuntime,
}

impl Running {
    /// Stops taking calls; answers being streamed are cut.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.served.await;
    }
}

/// Binds `listen` and serves Flight SQL on a runtime of its own, with TLS
/// from `tls` (certificate chain and key, PEM) or plain (loopback only,
/// checked by the settings), cutting large slices into endpoints of at
/// least `endpoint_rows` rows.
pub fn start(
    listen: std::net::SocketAddr,
    endpoint_rows: u64,
    tls: Option<(PathBuf, PathBuf)>,
    state: web::Data<AppState>,
) -> anyhow::Result<Running> {
    let listener = std::net::TcpListener::bind(listen)
        .with_context(|| format!("binding the Flight SQL listener {listen}"))?;
    listener.set_nonblocking(true)?;
    let port = listener.local_addr()?.port();
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let runtime =
        OwnedRuntime::new(threads, "sluice-flight").context("starting the Flight SQL threads")?;
    let incoming = {
        let _inside = runtime.handle().enter();
        TcpIncoming::from(tokio::net::TcpListener::from_std(listener)?).with_nodelay(Some(true))
    };
    let mut server = Server::builder();
    if let Some((cert, key)) = tls {
        let read = |p: &PathBuf| {
            std::fs::read(p).with_context(|| format!("reading {} for Flight SQL", p.display()))
        };
        let identity = Identity::from_pem(read(&cert)?, read(&key)?);
        server = server
            .tls_config(ServerTlsConfig::new().identity(identity))
            .context("Flight SQL TLS")?;
    }
    let service =
        service::SluiceFlight::new(state, endpoint_rows).context("Flight SQL server info")?;
    let answers = service.answers();
    let later_parts = service.later_parts();
    let flight = FlightServiceServer::new(service).max_decoding_message_size(MAX_REQUEST_BYTES);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = runtime.handle().spawn(async move {
        // Answers nobody fetched free their engine places and slots.
        let sweeper = tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(5));
            loop {
                every.tick().await;
                drop(answers.sweep());
                drop(later_parts.sweep());
            }
        });
        let result = server
            .add_service(flight)
            .serve_with_incoming_shutdown(incoming, async {
                let _ = stopped.await;
            })
            .await;
        sweeper.abort();
        if let Err(e) = result {
            tracing::error!(error = %e, "the Flight SQL listener stopped");
        }
    });
    tracing::info!(port, "Flight SQL is listening");
    Ok(Running {
        port,
        stop,
        served,
        _runtime: runtime,
    })
}
