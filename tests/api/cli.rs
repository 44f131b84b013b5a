//! The steward CLI: `sluice register` and `sluice datasets list|show|retire`,
//! directly on the catalogue folder and against a running server.

use std::process::Command;

use sluice::audit::Event;
use sluice::auth::Role;

use crate::helpers::{BinaryServer, succeeded as ok};

#[tokio::test]
async fn stewards_register_and_retire_from_the_command_line() {
    let mut server = BinaryServer::empty("policy_poll_ms = 60000");
    let dir = server.path().to_owned();
    let manifest = dir.join("manifest.toml");
    std::fs::write(
        &manifest,
        "id = \"wells\"\ntitle = \"Wells\"\ndescription = \"Water wells\"\nsector = \"water\"\npublisher = \"Water Board\"\nlicense = \"CC-BY-4.0\"\ntier = \"open\"\n\n[[columns]]\nname = \"well\"\ndescription = \"Well id\"\nkey = true\n\n[[columns]]\nname = \"depth\"\ndescription = \"Depth in metres\"\n",
    )
    .unwrap();
    let v1 = dir.join("wells.csv");
    std::fs::write(&v1, "well,depth\nW1,12.5\nW2,30\n").unwrap();
    let manifest_arg = manifest.to_str().unwrap();

    // Directly on the folder (no server running).
    let out = ok(&server.run(&["register", v1.to_str().unwrap(), "--manifest", manifest_arg]));
    let answer: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(answer["version"], 1);
    assert_eq!(answer["rows"], 2);
    let list = ok(&server.run(&["datasets", "list"]));
    assert!(list.contains("wells\tpublished\tv1"), "{list}");
    let show: serde_json::Value =
        serde_json::from_str(&ok(&server.run(&["datasets", "show", "wells"]))).unwrap();
    assert_eq!(show["versions"][0]["rows"], 2);

    // While a server has the folder, local writes are refused...
    server.start().await;
    let base = server.base.clone();
    let refused = server.run(&["register", v1.to_str().unwrap(), "--id", "wells"]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--server"));

    // ...and go through the server instead.
    let token = server.steward("Water Board");
    let v2 = dir.join("wells-2.csv");
    std::fs::write(&v2, "well,depth\nW1,13\nW2,31\nW3,8\n").unwrap();
    let remote = ["--server", base.as_str(), "--token", token.as_str()];
    let mut args = vec!["register", v2.to_str().unwrap(), "--id", "wells"];
    args.extend(remote);
    let answer: serde_json::Value = serde_json::from_str(&ok(&server.run(&args))).unwrap();
    assert_eq!(answer["version"], 2);
    assert_eq!(answer["rows"], 3);
    let csv = server
        .get("/v1/datasets/wells/data?format=csv", None)
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(csv.lines().count(), 4, "{csv}");
    let mut args = vec!["datasets", "retire", "wells"];
    args.extend(remote);
    ok(&server.run(&args));
    let gone = server.get("/v1/datasets/wells/data", None).await;
    assert_eq!(gone.status(), 404);
    server.kill();

    let list = ok(&server.run(&["datasets", "list"]));
    assert!(list.contains("wells\tretired\tv2"), "{list}");
    // Retired, not deleted: both versions are still on disk.
    assert!(dir.join("datasets/wells/versions/1").exists());
    assert!(dir.join("datasets/wells/versions/2").exists());

    // The local changes are in the same trail as the server's, which
    // still verifies as one chain.
    let records = sluice::audit::read_all(&server.state().join("audit")).unwrap();
    let local = |intent: bool| -> Vec<Event> {
        records
            .iter()
            .filter(|r| {
                r.subject
                    .as_deref()
                    .is_some_and(|s| s.starts_with("local:"))
                    && (r.phase == Some(sluice::audit::Phase::Intent)) == intent
            })
            .map(|r| r.event)
            .collect()
    };
    // Each change's record, and before it, its intent (durable before the
    // change commits).
    assert_eq!(local(false), [Event::Register, Event::Upload]);
    assert_eq!(local(true), [Event::Register, Event::Upload]);
    assert!(records.iter().any(|r| r.event == Event::Retire));
    ok(&server.run(&["audit", "verify"]));
}

/// Issue 19: client commands work from any folder, with no settings file,
/// when given a server; local ones say once where they looked. (The CLI
/// runs as a blocking child process, so the server needs threads of its
/// own.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_commands_work_from_a_folder_outside_the_repository() {
    let app = crate::helpers::spawn_app().await;
    let elsewhere = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        Command::new(crate::helpers::sluice_bin())
            .current_dir(elsewhere.path())
            .env_remove("SLUICE_CONFIG")
            .args(args)
            .output()
            .expect("the sluice binary runs")
    };
    let token = app.admin();
    let listed = ok(&run(&[
        "datasets", "list", "--server", &app.base, "--token", &token,
    ]));
    assert!(listed.contains("hospital-admissions"), "{listed}");
    let shown = ok(&run(&[
        "datasets",
        "show",
        "vaccination-coverage",
        "--server",
        &app.base,
    ]));
    assert!(shown.contains("\"vaccination-coverage\""), "{shown}");

    // A local command without a settings file: one clear line.
    let token = run(&["token", "--sub", "someone@example.org"]);
    assert!(!token.status.success());
    let stderr = String::from_utf8_lossy(&token.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("no settings file at config/sluice.toml"),
        "{stderr}"
    );
    assert!(stderr.contains("--config"), "{stderr}");
    // Tokens that are born expired are refused at the command line.
    let short = run(&["token", "--sub", "x", "--ttl", "0"]);
    assert!(!short.status.success());
    assert!(String::from_utf8_lossy(&short.stderr).contains("60"));
}

/// Issue 19: `sluice policy check` reports every error in one run, each
/// with its grant and what to write instead.
#[test]
fn policy_check_reports_every_error_at_once() {
    let server = BinaryServer::with_samples("", 50, None);
    let bad = server.path().join("bad.toml");
    std::fs::write(
        &bad,
        r#"
[[grant]]
id = "nobody"
dataset = "hospital-admissions"
purpose = "study"

[[grant]]
id = "no-purpose"
subjects = ["a@example.org"]
dataset = "hospital-admissions"
purpose = ""

[[grant]]
id = "dp-without-budget"
subjects = ["a@example.org"]
dataset = "hospital-admissions"
purpose = "statistics"
mode = "dp"

[[grant]]
id = "bad-filter"
subjects = ["a@example.org"]
dataset = "hospital-admissions"
purpose = "study"
row_filter = "region = "
"#,
    )
    .unwrap();
    let out = server.run(&["policy", "check", bad.to_str().unwrap()]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("4 problems"), "{stderr}");
    // Each names the line of its [[grant]] header (the text starts with a
    // newline, so the first header is line 2).
    for (grant, line, says) in [
        ("nobody", 2, "add subjects ="),
        ("no-purpose", 7, "say what the access is for"),
        ("dp-without-budget", 13, "needs epsilon"),
        ("bad-filter", 20, "row_filter"),
    ] {
        assert!(
            stderr
                .lines()
                .any(|l| l.contains(&format!("line {line}: grant '{grant}'")) && l.contains(says)),
            "{grant}: {stderr}"
        );
    }
}

/// Issue 19: the review life cycle and edits from the command line: a
/// first upload with columns from the file is held; `datasets edit`
/// classifies, `datasets publish` publishes; an admin restores a retired
/// dataset.
#[tokio::test]
async fn a_steward_reviews_edits_publishes_and_an_admin_restores_from_the_command_line() {
    let mut server = BinaryServer::empty("policy_poll_ms = 60000");
    let dir = server.path().to_owned();
    let manifest = dir.join("trusts.toml");
    std::fs::write(
        &manifest,
        "id = \"trusts\"\ntitle = \"Trusts\"\ndescription = \"Hospital trusts\"\nsector = \"health\"\npublisher = \"Water Board\"\nlicense = \"CC-BY-4.0\"\ntier = \"open\"\n",
    )
    .unwrap();
    let csv = dir.join("trusts.csv");
    std::fs::write(
        &csv,
        "Trust Name;Chief Executive;Beds\nKings;A. Person;NA\nGuys;B. Person;450\n",
    )
    .unwrap();
    server.start().await;
    let base = server.base.clone();
    let steward = server.steward("Water Board");
    let remote = ["--server", base.as_str(), "--token", steward.as_str()];
    let with = |args: &[&str]| -> Vec<String> {
        args.iter()
            .chain(remote.iter())
            .map(|s| s.to_string())
            .collect()
    };
    let run = |args: Vec<String>| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        server.run(&args)
    };

    let answer: serde_json::Value = serde_json::from_str(&ok(&run(with(&[
        "register",
        csv.to_str().unwrap(),
        "--manifest",
        manifest.to_str().unwrap(),
        "--delimiter",
        ";",
        "--null",
        "NA",
    ]))))
    .unwrap();
    assert_eq!(answer["in_review"], true);
    assert_eq!(answer["renamed_columns"]["Trust Name"], "trust_name");
    assert_eq!(
        server.get("/v1/datasets/trusts", None).await.status(),
        404,
        "held for review"
    );

    let edited = ok(&run(with(&[
        "datasets",
        "edit",
        "trusts",
        "--classify",
        "chief_executive=direct-identifier",
        "--keywords",
        "trusts, beds",
    ])));
    assert!(edited.contains("\"direct-identifier\""), "{edited}");
    let published = run(with(&["datasets", "publish", "trusts"]));
    assert!(published.status.success());
    assert!(String::from_utf8_lossy(&published.stderr).contains("published trusts version 1"));
    let csv_out = server
        .get("/v1/datasets/trusts/data?format=csv", None)
        .await
        .text()
        .await
        .unwrap();
    // `Beds` is a column name already; the identifier is not served.
    assert_eq!(csv_out, "trust_name,Beds\nKings,\nGuys,450\n");

    // Retired by its steward; only an admin brings it back.
    ok(&run(with(&["datasets", "retire", "trusts"])));
    let refused = run(with(&["datasets", "restore", "trusts"]));
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("admin-required"));
    let admin = server.token("root@example.org", &[Role::Admin], &[], None);
    let restored = server.run(&[
        "datasets", "restore", "trusts", "--server", &base, "--token", &admin,
    ]);
    assert!(restored.status.success(), "{restored:?}");
    assert_eq!(
        server.get("/v1/datasets/trusts/data", None).await.status(),
        200
    );
}

/// The README's steward commands work on the example files it names.
#[tokio::test]
async fn the_readme_example_files_register_and_upload() {
    let server = BinaryServer::empty("policy_poll_ms = 60000");
    let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let path = |name: &str| examples.join(name).to_str().unwrap().to_owned();
    let first: serde_json::Value = serde_json::from_str(&ok(&server.run(&[
        "register",
        &path("visits.csv"),
        "--manifest",
        &path("clinic-visits.toml"),
    ])))
    .unwrap();
    assert_eq!(
        (first["version"].as_u64(), first["rows"].as_u64()),
        (Some(1), Some(3))
    );
    assert_eq!(
        first["in_review"], false,
        "declared columns publish at once"
    );
    let second: serde_json::Value = serde_json::from_str(&ok(&server.run(&[
        "register",
        &path("visits-2025.csv"),
        "--id",
        "clinic-visits",
    ])))
    .unwrap();
    assert_eq!(second["version"], 2);
    let json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(examples.join("clinic-visits.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(json["id"], "clinic-visits");
}

/// Issue 34: `sluice login` keeps a pasted token for a server (checked
/// against it first, stored for its owner only), later commands with that
/// `--server` use it, a bad token is refused and not kept, and `sluice
/// logout` forgets it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_keeps_a_token_per_server_until_logout() {
    use std::io::Write;
    use std::process::Stdio;

    let app = crate::helpers::spawn_app().await;
    let config = tempfile::tempdir().unwrap();
    let folder = config.path().join("sluice");
    let run = |args: &[&str], stdin: &str| {
        let mut child = Command::new(crate::helpers::sluice_bin())
            .env("SLUICE_CONFIG_DIR", &folder)
            .env_remove("SLUICE_TOKEN")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the sluice binary runs");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    };
    // Without a provider's device flow configured, the server says to
    // paste a personal token, and where to make one.
    let offer: serde_json::Value = app.get_json("/v1/login", None).await;
    assert_eq!(offer["device"], serde_json::Value::Null);
    assert_eq!(offer["personal_tokens"], format!("{}/me/tokens", app.base));

    let changes = ["datasets", "changes", "--server", &app.base];
    assert!(!run(&changes, "").status.success(), "admins only");

    let signed_in = run(
        &["login", "--server", &app.base],
        &format!("{}\n", app.admin()),
    );
    assert!(
        signed_in.status.success(),
        "{}",
        String::from_utf8_lossy(&signed_in.stderr)
    );
    assert!(String::from_utf8_lossy(&signed_in.stderr).contains("signed in to"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(folder.join("credentials.json"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let listed = run(&changes, "");
    assert!(
        listed.status.success(),
        "{}",
        String::from_utf8_lossy(&listed.stderr)
    );

    // Personal tokens from the command line, with the kept sign-in.
    let made = run(
        &[
            "tokens", "create", "--name", "cli", "--days", "7", "--server", &app.base,
        ],
        "",
    );
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let made: serde_json::Value = serde_json::from_slice(&made.stdout).unwrap();
    assert!(made["token"].as_str().unwrap().starts_with("sluice_pat_"));
    let id = made["id"].as_str().unwrap();
    let listed = run(&["tokens", "list", "--server", &app.base], "");
    assert!(String::from_utf8_lossy(&listed.stdout).contains(id));
    let revoked = run(&["tokens", "revoke", id, "--server", &app.base], "");
    assert!(
        revoked.status.success(),
        "{}",
        String::from_utf8_lossy(&revoked.stderr)
    );
    let listed = run(&["tokens", "list", "--server", &app.base], "");
    assert!(!String::from_utf8_lossy(&listed.stdout).contains(id));

    // A token the server refuses is not kept: the one before stays.
    let refused = run(&["login", "--server", &app.base], "not-a-token\n");
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("invalid-token"));
    assert!(run(&changes, "").status.success());

    assert!(run(&["logout", "--server", &app.base], "").status.success());
    assert!(!run(&changes, "").status.success());
}
