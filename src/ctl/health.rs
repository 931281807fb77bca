//! `zkcoord health`: the `grpc.health.v1` status of every endpoint, for the whole server
//! (`""`) and each zkcoord service.

use std::{process::ExitCode, time::Duration};

use clap::Args;
use serde_json::{Value, json};
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};
use zkcoord_client::{Tls, endpoint_of};

use super::{
    ClientArgs, CtlError, EX_UNAVAILABLE,
    error::{is_unreachable, transport_detail},
    output::{self, Format, Table},
};

/// The services checked on every endpoint: the whole server, then each zkcoord service.
const SERVICES: [&str; 4] = ["", "zkcoord.v1.Lease", "zkcoord.v1.Election", "zkcoord.v1.Lock"];

/// How long one endpoint may take to connect and answer.
const TIMEOUT: Duration = Duration::from_secs(5);

/// `zkcoord health`.
#[derive(Debug, Args)]
pub struct HealthArgs {
    /// Where the zkcoord instances are and how to talk to them.
    #[command(flatten)]
    pub client: ClientArgs,
}

/// One endpoint's answers, or why it gave none.
type Answers = Result<Vec<(&'static str, ServingStatus)>, String>;

/// Checks every endpoint (not just the first that answers). Exits 0 when every service of
/// every endpoint is SERVING, 69 when an endpoint cannot be reached, 1 otherwise.
///
/// # Errors
/// [`CtlError::Usage`] for a malformed endpoint.
pub async fn run(args: HealthArgs) -> Result<ExitCode, CtlError> {
    let tls = args.client.tls()?;
    let mut results = Vec::new();
    for endpoint in args.client.endpoints.iter().map(|e| e.trim()).filter(|e| !e.is_empty()) {
        results.push((endpoint.to_owned(), check(endpoint, tls.as_ref()).await?));
    }
    if results.is_empty() {
        return Err(CtlError::Usage("--endpoints: no zkcoord endpoints given".into()));
    }
    let mut unreachable = false;
    let mut all_serving = true;
    for (endpoint, answers) in &results {
        match answers {
            Ok(answers) => all_serving &= answers.iter().all(|(_, status)| *status == ServingStatus::Serving),
            Err(detail) => {
                unreachable = true;
                eprintln!("error: cannot reach zkcoord at {endpoint}: {detail}");
            }
        }
    }
    match args.client.output {
        Format::Table => {
            let mut table = Table::new(&["ENDPOINT", "SERVICE", "STATUS"]);
            for (endpoint, answers) in &results {
                for (service, status) in answers.iter().flatten() {
                    let service = if service.is_empty() { "(server)" } else { service };
                    table.row(vec![endpoint.clone(), service.to_owned(), status.as_str_name().to_owned()]);
                }
            }
            print!("{table}");
        }
        Format::Json => {
            let endpoints: Vec<Value> = results
                .iter()
                .map(|(endpoint, answers)| match answers {
                    Ok(answers) => {
                        let services: Vec<Value> = answers
                            .iter()
                            .map(|(service, status)| json!({ "service": service, "status": status.as_str_name() }))
                            .collect();
                        json!({ "endpoint": endpoint, "reachable": true, "services": services })
                    }
                    Err(detail) => json!({ "endpoint": endpoint, "reachable": false, "error": detail, "services": [] }),
                })
                .collect();
            output::print_json(&json!({ "serving": all_serving && !unreachable, "endpoints": endpoints }));
        }
    }
    if unreachable {
        Ok(ExitCode::from(EX_UNAVAILABLE))
    } else if all_serving {
        Ok(ExitCode::SUCCESS)
    } else {
        Ok(ExitCode::FAILURE)
    }
}

/// Checks each service on one endpoint.
async fn check(endpoint: &str, tls: Option<&Tls>) -> Result<Answers, CtlError> {
    let builder = endpoint_of(endpoint, tls).map_err(|err| CtlError::Usage(format!("--endpoints: {err}")))?;
    let channel = builder.connect_timeout(TIMEOUT).timeout(TIMEOUT).connect_lazy();
    let mut client = HealthClient::new(channel);
    let mut answers = Vec::new();
    for service in SERVICES {
        match client.check(HealthCheckRequest { service: service.into() }).await {
            Ok(response) => answers.push((service, response.into_inner().status())),
            Err(status) if is_unreachable(&status) || status.code() == tonic::Code::Cancelled => {
                return Ok(Err(transport_detail(&status)));
            }
            // An instance that answers but does not know the service counts as not serving.
            Err(status) => {
                eprintln!("zkcoord: {endpoint}: health of {service:?}: {}: {}", status.code(), status.message());
                answers.push((service, ServingStatus::Unknown));
            }
        }
    }
    Ok(Ok(answers))
}
