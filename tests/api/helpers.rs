//! `spawn_app()` and what tests need to talk to it; `BinaryServer`, the
//! real binary as a child process.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::Duration;

use arrow::array::{Array, RecordBatch};
use sluice::auth::Role;
use sluice::auth::dev::{DevKey, TokenRequest};
use sluice::config::{Settings, TlsMode};
use sluice::startup::Application;
use tempfile::TempDir;

/// Rows per sample dataset in tests.
pub const ROWS: u64 = 600;

pub const TEST_POLICY: &str = r#"
[[grant]]
id = "los-study"
subjects = ["alice@uni.example"]
dataset = "hospital-admissions"
purpose = "Length-of-stay study"
columns = ["age_band", "sex", "region", "icd10_chapter", "admission_date", "length_of_stay"]
max_rows = 250
expires = 2099-12-31

[[grant]]
id = "north-planning"
groups = ["nhs-north"]
dataset = "hospital-admissions"
purpose = "Capacity planning, north"
row_filter = "region = 'north'"
unmask = ["admission_date"]
expires = 2099-12-31

[[grant]]
id = "north-audit"
groups = ["nhs-audit"]
dataset = "hospital-admissions"
purpose = "Clinical audit, north"
row_filter = "region = 'north'"
project = "audit-2026"

[[grant]]
id = "agency-statistics"
organisations = ["Example Public Health Agency"]
dataset = "hospital-admissions"
purpose = "Published regional statistics"
mode = "aggregate"

[[visa_grant]]
dataset = "hospital-admissions"
value = "https://sluice.example/datasets/hospital-admissions"
mode = "aggregate"

[[grant]]
id = "closed-pilot"
subjects = ["bob@college.example"]
dataset = "hospital-admissions"
purpose = "Closed pilot"
expires = 2020-01-01

[[grant]]
id = "dp-network"
organisations = ["DP Research Network"]
dataset = "hospital-admissions"
purpose = "Differentially private statistics for member projects"
mode = "dp"
epsilon = 2.0
epsilon_per_query = 0.5
project = "network-2026"

[[grant]]
id = "dp-calibration"
subjects = ["calibration@dp.example"]
dataset = "hospital-admissions"
purpose = "Checking the release against the truth"
mode = "dp"
epsilon = 1000000.0
epsilon_per_query = 10000.0
"#;

pub struct TestApp {
    pub base: String,
    pub client: reqwest::Client,
    /// Kept so the temporary catalogue and state live as long as the server.
    _dir: TempDir,
    pub settings: Settings,
    dev_key: DevKey,
}

/// The `sluice` binary under test: Cargo's, unless `SLUICE_TEST_BIN` names
/// another (a copy, when several checkouts share one target folder and may
/// rebuild Cargo's under a running test).
pub fn sluice_bin() -> PathBuf {
    std::env::var_os("SLUICE_TEST_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_sluice").into())
}

pub fn settings_for(dir: &Path) -> Settings {
    let mut settings = Settings::from_toml_str("[auth]\ndev_mode = true\n").expect("test settings");
    settings.server.listen = "127.0.0.1:0".parse().expect("address");
    settings.server.workers = 2;
    settings.server.query_threads = 2;
    settings.tls.mode = TlsMode::Off;
    settings.storage.datasets = dir.join("datasets");
    settings.storage.state = dir.join("state");
    settings.storage.policy = dir.join("policy.toml");
    // In-process servers run uploads in the real binary, as `serve` does.
    settings.ingest.worker = Some(sluice_bin());
    settings
}

/// Writes a policy file sealed as whole, as `sluice policy apply` does
/// (the server refuses unsealed files).
pub fn write_policy(path: impl AsRef<Path>, text: impl AsRef<str>) {
    std::fs::write(path, sluice::policy::seal::seal(text.as_ref())).expect("policy");
}

/// A server on plain HTTP over loopback, with the sample datasets.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(ROWS, |_| {}).await
}

/// A server with `rows` rows per sample dataset and settings changed in code.
pub async fn spawn_app_with(rows: u64, customize: impl FnOnce(&mut Settings)) -> TestApp {
    let dir = tempfile::tempdir().expect("temp dir");
    sluice::demo_data::write_all(&dir.path().join("datasets"), rows, 42, None).expect("demo data");
    crate::helpers::write_policy(dir.path().join("policy.toml"), TEST_POLICY);
    let mut settings = settings_for(dir.path());
    customize(&mut settings);
    let app = Application::build(settings.clone())
        .await
        .expect("server builds");
    let scheme = if app.is_https() { "https" } else { "http" };
    let base = format!("{scheme}://127.0.0.1:{}", app.port());
    tokio::spawn(app.run_until_stopped());
    let dev_key = DevKey::load_or_create(&settings.storage.state).expect("dev key");
    TestApp {
        base,
        client: reqwest::Client::new(),
        _dir: dir,
        settings,
        dev_key,
    }
}

/// Settings for a catalogue in an in-memory object store, with an empty
/// policy (the sample grants name datasets the empty store does not have).
pub fn in_object_store(s: &mut Settings) {
    s.storage.datasets_url = Some("memory:///".into());
    let policy = s.storage.state.with_file_name("empty-policy.toml");
    crate::helpers::write_policy(&policy, "");
    s.storage.policy = policy;
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub fn state_dir(&self) -> PathBuf {
        self.settings.storage.state.clone()
    }

    /// Every raw value of a column in the dataset's file, read directly.
    pub fn raw_column(&self, dataset: &str, column: &str) -> Vec<String> {
        let path = self
            .settings
            .storage
            .datasets
            .join(dataset)
            .join("versions/1/part-0.parquet");
        let bytes = bytes::Bytes::from(std::fs::read(path).expect("data file"));
        strings(&decode_parquet(bytes), column)
    }

    pub fn token(&self, sub: &str, roles: &[Role], groups: &[&str]) -> String {
        self.mint(sub, roles, groups, None)
    }

    /// A token for `sub` with roles and an organisation claim.
    pub fn token_in(&self, sub: &str, roles: &[Role], organisation: &str) -> String {
        self.mint(sub, roles, &[], Some(organisation))
    }

    fn mint(&self, sub: &str, roles: &[Role], groups: &[&str], org: Option<&str>) -> String {
        self.dev_key
            .mint(&TokenRequest {
                issuer: self.settings.auth.issuer.clone(),
                audience: self.settings.auth.audience.clone(),
                ..token_request(sub, roles, groups, org)
            })
            .expect("mint")
    }

    pub fn admin(&self) -> String {
        self.token("ada@sluice.example", &[Role::Admin], &[])
    }

    pub fn researcher(&self) -> String {
        self.token("rita@uni.example", &[Role::Researcher], &[])
    }

    pub fn alice(&self) -> String {
        self.token("alice@uni.example", &[Role::Researcher], &[])
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> reqwest::Response {
        get(&self.client, self.url(path), token).await
    }

    /// The JSON body of a GET.
    pub async fn get_json(&self, path: &str, token: Option<&str>) -> serde_json::Value {
        json_body(self.get(path, token).await).await
    }

    /// GET …/data with a raw query string (already encoded where needed).
    pub async fn data(
        &self,
        id: &str,
        query: &[(&str, &str)],
        token: Option<&str>,
    ) -> reqwest::Response {
        let mut request = self
            .client
            .get(self.url(&format!("/v1/datasets/{id}/data")))
            .query(query);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send().await.expect("request sent")
    }
}

/// GET `url`, with `token` as the bearer if there is one.
pub async fn get(client: &reqwest::Client, url: String, token: Option<&str>) -> reqwest::Response {
    let mut request = client.get(url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.expect("request sent")
}

/// A response's JSON body.
pub async fn json_body(response: reqwest::Response) -> serde_json::Value {
    response.json().await.expect("json body")
}

/// A development token's claims: `sub` with roles, groups and an
/// organisation, for ten minutes, from the default issuer to the default
/// audience.
pub fn token_request(
    sub: &str,
    roles: &[Role],
    groups: &[&str],
    org: Option<&str>,
) -> TokenRequest {
    TokenRequest {
        sub: sub.into(),
        roles: roles.to_vec(),
        groups: groups.iter().map(|g| g.to_string()).collect(),
        organisation: org.map(str::to_owned),
        ttl_secs: 600,
        issuer: "sluice-dev".into(),
        audience: "sluice".into(),
    }
}

/// Asserts a problem+json answer and returns its body.
pub async fn problem(response: reqwest::Response, status: u16, kind: &str) -> serde_json::Value {
    assert_eq!(response.status().as_u16(), status, "status");
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(content_type, "application/problem+json");
    let body: serde_json::Value = response.json().await.expect("json body");
    assert_eq!(body["type"], kind, "problem type in {body}");
    assert_eq!(body["status"], status);
    assert!(body["request_id"].is_string());
    body
}

/// Asserts a problem+json answer whose detail contains `needle`, and
/// returns its body.
pub async fn problem_saying(
    response: reqwest::Response,
    status: u16,
    kind: &str,
    needle: &str,
) -> serde_json::Value {
    let p = problem(response, status, kind).await;
    assert!(p["detail"].as_str().unwrap().contains(needle), "{p}");
    p
}

pub async fn arrow_batches(response: reqwest::Response) -> Vec<RecordBatch> {
    assert_eq!(response.status(), 200, "status");
    assert_eq!(
        response.headers()["content-type"],
        "application/vnd.apache.arrow.stream"
    );
    arrow_batches_of(&response.bytes().await.expect("body"))
}

/// An Arrow IPC stream's batches (compressed or not), each column checked
/// to hold only released bytes.
pub fn arrow_batches_of(body: &[u8]) -> Vec<RecordBatch> {
    let reader =
        arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(body.to_vec()), None)
            .expect("arrow stream");
    let batches = reader.collect::<Result<Vec<_>, _>>().expect("batches");
    for batch in &batches {
        for (column, field) in batch.columns().iter().zip(batch.schema().fields()) {
            assert_only_released_bytes(field.name(), &column.to_data());
        }
    }
    batches
}

/// Scans an array's raw buffers, as an attacker reading `buffers()` would:
/// a null slot's bytes must be zero and a string buffer must hold exactly
/// the bytes its valid slots point at. A withheld value that only had its
/// validity bit cleared (`nullif`) fails here, whatever the slot shows.
/// Every Arrow answer the tests decode passes through this.
pub fn assert_only_released_bytes(name: &str, data: &arrow::array::ArrayData) {
    use arrow::datatypes::DataType as T;
    let is_null = |i: usize| data.nulls().is_some_and(|n| n.is_null(i));
    match data.data_type() {
        T::Utf8 | T::Binary => {
            let offsets: &[i32] = data.buffers()[0].typed_data();
            let offsets = &offsets[data.offset()..=data.offset() + data.len()];
            for i in 0..data.len() {
                if is_null(i) {
                    assert_eq!(
                        offsets[i],
                        offsets[i + 1],
                        "{name}: null slot {i} has bytes"
                    );
                }
            }
            let used = (offsets[data.len()] - offsets[0]) as usize;
            assert_eq!(
                data.buffers()[1].len(),
                used,
                "{name}: string buffer holds bytes no slot points at"
            );
        }
        T::LargeUtf8 | T::Utf8View | T::BinaryView | T::Dictionary(..) => {
            panic!(
                "{name}: served as {:?}, which can carry other rows' bytes",
                data.data_type()
            )
        }
        T::Boolean => {
            let values = arrow::buffer::BooleanBuffer::new(
                data.buffers()[0].clone(),
                data.offset(),
                data.len(),
            );
            for i in 0..data.len() {
                assert!(
                    !(is_null(i) && values.value(i)),
                    "{name}: null slot {i} is set"
                );
            }
        }
        T::Null => {}
        other => {
            let width = other
                .primitive_width()
                .unwrap_or_else(|| panic!("{name}: no raw-buffer check for {other:?}"));
            let bytes = &data.buffers()[0].as_slice()[data.offset() * width..];
            assert_eq!(
                bytes.len(),
                data.len() * width,
                "{name}: buffer holds bytes beyond its slots"
            );
            for i in 0..data.len() {
                if is_null(i) {
                    assert!(
                        bytes[i * width..(i + 1) * width].iter().all(|b| *b == 0),
                        "{name}: null slot {i} carries a value in its bytes"
                    );
                }
            }
        }
    }
}

pub fn rows(batches: &[RecordBatch]) -> usize {
    batches.iter().map(|b| b.num_rows()).sum()
}

pub fn column_names(batches: &[RecordBatch]) -> Vec<String> {
    batches
        .first()
        .map(|b| {
            b.schema()
                .fields()
                .iter()
                .map(|f| f.name().clone())
                .collect()
        })
        .unwrap_or_default()
}

/// Every value of a string column, as text.
pub fn strings(batches: &[RecordBatch], column: &str) -> Vec<String> {
    batches
        .iter()
        .flat_map(|b| {
            let array = b.column_by_name(column).expect("column present");
            let text =
                arrow::compute::cast(array, &arrow::datatypes::DataType::Utf8).expect("cast");
            let text = text
                .as_any()
                .downcast_ref::<arrow::array::StringArray>()
                .expect("strings")
                .clone();
            (0..text.len())
                .map(move |i| {
                    if text.is_null(i) {
                        "NULL".to_string()
                    } else {
                        text.value(i).to_string()
                    }
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The key-value metadata keys of a Parquet file's footer.
pub fn footer_keys(bytes: bytes::Bytes) -> Vec<String> {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    let file = SerializedFileReader::new(bytes).expect("a Parquet file");
    file.metadata()
        .file_metadata()
        .key_value_metadata()
        .into_iter()
        .flatten()
        .map(|kv| kv.key.clone())
        .collect()
}

pub fn decode_parquet(bytes: bytes::Bytes) -> Vec<RecordBatch> {
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes)
        .expect("parquet")
        .build()
        .expect("reader");
    reader.collect::<Result<Vec<_>, _>>().expect("batches")
}

/// A token of the organisation whose grant is aggregate-only.
pub fn agency(app: &TestApp) -> String {
    app.token_in(
        "stats@agency.example",
        &[Role::Researcher],
        "Example Public Health Agency",
    )
}

/// The organisation of the stewards in the steward tests.
pub const OBSERVATORY: &str = "Public Health Observatory";

/// A steward of [`OBSERVATORY`].
pub fn observatory_steward(app: &TestApp) -> String {
    app.token_in("sam@observatory.example", &[Role::Steward], OBSERVATORY)
}

/// `POST /v1/datasets` with a JSON manifest.
pub async fn register(app: &TestApp, token: &str, body: &serde_json::Value) -> reqwest::Response {
    app.client
        .post(app.url("/v1/datasets"))
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        .expect("request sent")
}

/// `PUT /v1/datasets/{id}/data` with a body of `content_type`.
pub async fn upload(
    app: &TestApp,
    token: &str,
    id: &str,
    content_type: &str,
    body: impl Into<reqwest::Body>,
) -> reqwest::Response {
    app.client
        .put(app.url(&format!("/v1/datasets/{id}/data")))
        .bearer_auth(token)
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .expect("request sent")
}

/// `POST path` with `token`, no body.
pub async fn post(app: &TestApp, token: &str, path: &str) -> reqwest::Response {
    app.client
        .post(app.url(path))
        .bearer_auth(token)
        .send()
        .await
        .expect("request sent")
}

/// `POST /v1/datasets/{id}/publish`: publishes the version in review.
pub async fn publish(app: &TestApp, token: &str, id: &str) -> reqwest::Response {
    app.client
        .post(app.url(&format!("/v1/datasets/{id}/publish")))
        .bearer_auth(token)
        .send()
        .await
        .expect("request sent")
}

/// `GET /v1/datasets/hospital-admissions/aggregate` with `query`.
pub async fn aggregate(app: &TestApp, token: &str, query: &[(&str, &str)]) -> reqwest::Response {
    app.client
        .get(app.url("/v1/datasets/hospital-admissions/aggregate"))
        .query(query)
        .bearer_auth(token)
        .send()
        .await
        .expect("request sent")
}

/// `PATCH /v1/datasets/{id}` with a JSON edit.
pub async fn edit(
    app: &TestApp,
    token: &str,
    id: &str,
    body: serde_json::Value,
) -> reqwest::Response {
    app.client
        .patch(app.url(&format!("/v1/datasets/{id}")))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .expect("request sent")
}

/// `DELETE /v1/datasets/{id}`: retires the dataset.
pub async fn retire(app: &TestApp, token: &str, id: &str) -> reqwest::Response {
    app.client
        .delete(app.url(&format!("/v1/datasets/{id}")))
        .bearer_auth(token)
        .send()
        .await
        .expect("request sent")
}

/// The audit records about `dataset`, read with an admin's token.
pub async fn audit_records(app: &TestApp, dataset: &str) -> Vec<serde_json::Value> {
    let admin = app.token("root", &[Role::Admin], &[]);
    let audit: serde_json::Value = app
        .get_json(&format!("/v1/audit?dataset={dataset}"), Some(&admin))
        .await;
    audit["records"].as_array().unwrap().clone()
}

/// A record batch as an Arrow IPC stream.
pub fn arrow_stream(batch: &RecordBatch) -> Vec<u8> {
    let mut out = Vec::new();
    let mut writer = arrow::ipc::writer::StreamWriter::try_new(&mut out, &batch.schema()).unwrap();
    writer.write(batch).unwrap();
    writer.finish().unwrap();
    drop(writer);
    out
}

/// A record batch as a Parquet file, written with `props` if given.
pub fn parquet_file(
    batch: &RecordBatch,
    props: Option<parquet::file::properties::WriterProperties>,
) -> Vec<u8> {
    let mut out = Vec::new();
    let mut writer = parquet::arrow::ArrowWriter::try_new(&mut out, batch.schema(), props).unwrap();
    writer.write(batch).unwrap();
    writer.close().unwrap();
    out
}

/// A free loopback port (free when asked; the binary binds it later).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The real `sluice` binary (`sluice serve`) as a child process, serving a
/// temporary folder over plain HTTP on a free loopback port: an empty
/// policy, dev-mode tokens, and the `[server]` lines a test adds. Made
/// stopped; [`BinaryServer::start`] starts it and waits until it answers.
/// A server still running when this is dropped is killed (SIGKILL).
pub struct BinaryServer {
    /// Kept so the folder lives as long as the server (dropped after it).
    dir: TempDir,
    /// The settings file the binary reads (`--config`).
    pub config: PathBuf,
    /// `http://127.0.0.1:{port}`.
    pub base: String,
    pub client: reqwest::Client,
    /// Extra environment for the server and commands (`SLUICE_CRASH_AT`).
    pub env: Vec<(String, String)>,
    child: Option<Child>,
}

impl BinaryServer {
    /// A server with an empty catalogue.
    pub fn empty(server_extra: &str) -> Self {
        let server = Self::new(server_extra);
        std::fs::create_dir_all(server.datasets()).unwrap();
        server
    }

    /// A server with the sample datasets (seed 1), `rows` rows each; only
    /// the one named, if `only` names one.
    pub fn with_samples(server_extra: &str, rows: u64, only: Option<&str>) -> Self {
        let server = Self::new(server_extra);
        sluice::demo_data::write_all(&server.datasets(), rows, 1, only).unwrap();
        server
    }

    /// Writes an empty policy and a plain-HTTP config on a free port.
    fn new(server_extra: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        crate::helpers::write_policy(dir.path().join("policy.toml"), "");
        let port = free_port();
        let config = dir.path().join("sluice.toml");
        std::fs::write(
            &config,
            format!(
                "[server]\nlisten = \"127.0.0.1:{port}\"\n{server_extra}\n[tls]\nmode = \"off\"\n[auth]\ndev_mode = true\n[storage]\ndatasets = \"{0}/datasets\"\nstate = \"{0}/state\"\npolicy = \"{0}/policy.toml\"\n",
                dir.path().display()
            ),
        )
        .unwrap();
        Self {
            dir,
            config,
            base: format!("http://127.0.0.1:{port}"),
            client: reqwest::Client::new(),
            env: Vec::new(),
            child: None,
        }
    }

    /// The server's folder (settings, catalogue, state and policy).
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn datasets(&self) -> PathBuf {
        self.path().join("datasets")
    }

    pub fn state(&self) -> PathBuf {
        self.path().join("state")
    }

    pub fn policy(&self) -> PathBuf {
        self.path().join("policy.toml")
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> reqwest::Response {
        get(&self.client, self.url(path), token).await
    }

    /// The JSON body of a GET.
    pub async fn get_json(&self, path: &str, token: Option<&str>) -> serde_json::Value {
        json_body(self.get(path, token).await).await
    }

    /// Starts `sluice serve` and waits until `/healthz` answers.
    pub async fn start(&mut self) {
        assert!(self.child.is_none(), "the server is already running");
        let child = Command::new(sluice_bin())
            .arg("--config")
            .arg(&self.config)
            .arg("serve")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the sluice binary starts");
        self.child = Some(child);
        for _ in 0..100 {
            if self.client.get(self.url("/healthz")).send().await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("server did not start");
    }

    /// The running server's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the server is running").id()
    }

    /// Sends `signal` ("TERM", "HUP", …) to the running server.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the server to exit.
    pub fn wait(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("the server is running");
        child.wait().unwrap()
    }

    /// SIGKILL, and waits for the process to go.
    pub fn kill(&mut self) {
        let mut child = self.child.take().expect("the server is running");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// A token signed with the binary's development key, for an hour.
    pub fn token(&self, sub: &str, roles: &[Role], groups: &[&str], org: Option<&str>) -> String {
        DevKey::load_or_create(&self.state())
            .unwrap()
            .mint(&TokenRequest {
                ttl_secs: 3600,
                ..token_request(sub, roles, groups, org)
            })
            .unwrap()
    }

    /// A steward of `org`.
    pub fn steward(&self, org: &str) -> String {
        self.token("sam@observatory.example", &[Role::Steward], &[], Some(org))
    }

    /// `sluice --config <config> <args>`, run to its end.
    pub fn run(&self, args: &[&str]) -> Output {
        Command::new(sluice_bin())
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .output()
            .expect("the sluice binary runs")
    }
}

impl Drop for BinaryServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// What a command that must succeed printed; its stderr if it failed.
pub fn succeeded(output: &Output) -> String {
    assert!(
        output.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// An ICD-10 chapter no row of `dataset`'s sample has (the sample uses
/// only some of the 22 declared chapters).
pub fn chapter_without_rows(app: &TestApp, dataset: &str) -> String {
    let seen: std::collections::HashSet<String> = app
        .raw_column(dataset, "icd10_chapter")
        .into_iter()
        .collect();
    [
        "I", "II", "III", "IV", "V", "VI", "VII", "VIII", "IX", "X", "XX", "XXII",
    ]
    .into_iter()
    .find(|c| !seen.contains(*c))
    .expect("a chapter without rows")
    .to_string()
}
