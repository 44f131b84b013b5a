//! Issue 31: faults lose nothing and widen nothing. A policy file caught
//! half-written never takes effect; `sluice policy apply` is the way in;
//! a full state disk answers 503 and leaves a trail and a ledger that
//! verify and open; a crash at any step of an approval or a catalogue
//! change leaves no change in force without its record.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};
use sluice::auth::Role;

use crate::helpers::{
    BinaryServer, ROWS, TEST_POLICY, TestApp, agency, problem, spawn_app_with, succeeded,
    write_policy,
};

const ID: &str = "hospital-admissions";

fn analyst(app: &TestApp) -> String {
    app.token("nora@nhs.example", &[Role::Researcher], &["nhs-north"])
}

/// The regions the north analyst's rows come from.
async fn analyst_regions(app: &TestApp) -> Vec<String> {
    let response = app
        .data(
            ID,
            &[("columns", "region"), ("format", "csv"), ("limit", "500")],
            Some(&analyst(app)),
        )
        .await;
    assert_eq!(response.status(), 200);
    let mut regions: Vec<String> = response
        .text()
        .await
        .unwrap()
        .lines()
        .skip(1)
        .map(str::to_owned)
        .collect();
    regions.sort();
    regions.dedup();
    regions
}

/// Finding 1: every cut of the policy file at a line boundary, written in
/// place as an editor or a copy would leave it mid-write, is valid TOML
/// more often than not, and some widen access (a cut before
/// `row_filter = …` or `mode = …`). None takes effect.
#[tokio::test]
async fn a_policy_file_caught_half_written_never_takes_effect() {
    let app = spawn_app_with(ROWS, |s| s.server.policy_poll_ms = 50).await;
    let file = app.settings.storage.policy.clone();
    let whole = std::fs::read_to_string(&file).unwrap();
    assert_eq!(analyst_regions(&app).await, ["north"]);
    let rows_for_agency = || async {
        app.data(
            ID,
            &[("columns", "region"), ("limit", "1")],
            Some(&agency(&app)),
        )
        .await
        .status()
    };
    assert_eq!(rows_for_agency().await, 403);

    let boundaries: Vec<usize> = whole.match_indices('\n').map(|(i, _)| i + 1).collect();
    let mut widening_cuts = 0;
    for &cut in &boundaries[..boundaries.len() - 1] {
        let part = &whole[..cut];
        let parses = sluice::policy::Policy::parse(part, "cut").is_ok();
        let drops_a_narrowing = parses
            && (!part.contains("row_filter = \"region = 'north'\"")
                || !part.contains("mode = \"aggregate\""));
        widening_cuts += usize::from(drops_a_narrowing);
        std::fs::write(&file, part).unwrap();
        // Several polls see the cut file.
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert_eq!(analyst_regions(&app).await, ["north"], "cut at byte {cut}");
        assert_eq!(rows_for_agency().await, 403, "cut at byte {cut}");
    }
    assert!(widening_cuts > 3, "only {widening_cuts} cuts would widen");

    // The refusal is visible: to everyone that the file is not in force,
    // to admins why.
    let ready = app.get_json("/readyz", None).await;
    assert_eq!(ready["policy_reload"]["state"], "refused", "{ready}");
    assert!(ready["policy_reload"].get("problem").is_none());
    let ready = app.get_json("/readyz", Some(&app.admin())).await;
    let problem = ready["policy_reload"]["problem"].as_str().unwrap();
    assert!(problem.contains("sluice policy apply"), "{problem}");

    // The whole file, sealed, is taken again; a widening written whole
    // and sealed takes effect, recorded with the grant's old and new text.
    let widened = TEST_POLICY.replace("row_filter = \"region = 'north'\"\nunmask", "unmask");
    assert_ne!(widened, TEST_POLICY);
    write_policy(&file, &widened);
    for _ in 0..100 {
        if analyst_regions(&app).await.len() > 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(analyst_regions(&app).await.len() > 1);
    let ready = app.get_json("/readyz", None).await;
    assert!(ready.get("policy_reload").is_none(), "{ready}");
    let records = sluice::audit::read_all(&app.state_dir().join("audit")).unwrap();
    let reload = records
        .iter()
        .rev()
        .find(|r| r.event == sluice::audit::Event::PolicyReload && !r.changes.is_empty())
        .expect("the widening reload is recorded");
    let change = reload
        .changes
        .iter()
        .find(|c| c.field == "grant 'north-planning'")
        .expect("the changed grant");
    assert!(change.widens);
    assert!(change.old.as_deref().unwrap().contains("region = 'north'"));
    assert!(!change.new.as_deref().unwrap().contains("region = 'north'"));
}

/// `sluice policy apply` checks a file, seals it and replaces the live one
/// keeping its permissions; a file with an error changes nothing. The
/// server refuses to start on an unsealed file, saying how to seal it.
#[tokio::test]
async fn policy_apply_is_the_way_in_and_keeps_the_file_private() {
    use std::os::unix::fs::PermissionsExt;
    let server = BinaryServer::with_samples("", ROWS, None);
    write_policy(server.policy(), TEST_POLICY);
    std::fs::set_permissions(server.policy(), std::fs::Permissions::from_mode(0o600)).unwrap();
    let draft = server.path().join("draft.toml");
    std::fs::write(
        &draft,
        TEST_POLICY.replace("max_rows = 250", "max_rows = 100"),
    )
    .unwrap();
    let out = succeeded(&server.run(&["policy", "apply", draft.to_str().unwrap()]));
    assert!(out.contains("sealed"), "{out}");
    let live = std::fs::read_to_string(server.policy()).unwrap();
    assert!(sluice::policy::seal::is_sealed(&live));
    assert!(live.contains("max_rows = 100"));
    let mode = std::fs::metadata(server.policy())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    std::fs::write(&draft, "[[grant]]\nid = 3\n").unwrap();
    let refused = server.run(&["policy", "apply", draft.to_str().unwrap()]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("nothing was changed"));
    assert_eq!(std::fs::read_to_string(server.policy()).unwrap(), live);

    // An edit by hand, unsealed: `serve` says what to do.
    std::fs::write(server.policy(), TEST_POLICY).unwrap();
    let serve = Command::new(crate::helpers::sluice_bin())
        .arg("--config")
        .arg(&server.config)
        .arg("serve")
        .output()
        .unwrap();
    assert!(!serve.status.success());
    let stderr = String::from_utf8_lossy(&serve.stderr);
    assert!(stderr.contains("sluice policy apply"), "{stderr}");
}

/// A small tmpfs mounted on `dir` for as long as this lives.
struct SmallDisk(PathBuf);

impl SmallDisk {
    /// `None` when this process may not mount (not root, or a container
    /// without the right to mount): the test says it was skipped.
    fn mount(dir: &Path, bytes: u64) -> Option<Self> {
        // SAFETY: reads the effective user id; no memory is shared.
        if unsafe { libc::geteuid() } != 0 {
            return None;
        }
        std::fs::create_dir_all(dir).unwrap();
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
            .arg(dir)
            .status()
            .is_ok_and(|s| s.success());
        mounted.then(|| Self(dir.to_owned()))
    }

    /// Fills the disk; the filler goes when the returned path is removed.
    fn fill(&self) -> PathBuf {
        use std::io::Write;
        let filler = self.0.join("filler");
        let mut file = std::fs::File::create(&filler).unwrap();
        let block = vec![0u8; 64 * 1024];
        while file.write_all(&block).is_ok() {}
        let small = [0u8; 512];
        while file.write_all(&small).is_ok() {}
        let _ = file.sync_all();
        filler
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Findings 3, 4, 6 and 8: with the state disk full, data, DP answers,
/// catalogue changes and access requests are refused with 503 and change
/// nothing; `/readyz` says so; once there is room again the server
/// serves, and after a kill the trail verifies whole and the ledger opens.
#[tokio::test]
async fn a_full_state_disk_refuses_with_503_and_leaves_everything_whole() {
    let mut server = BinaryServer::with_samples("policy_poll_ms = 60000", ROWS, None);
    write_policy(server.policy(), TEST_POLICY);
    let Some(disk) = SmallDisk::mount(&server.state(), 4 << 20) else {
        eprintln!("SKIPPED: mounting a tmpfs needs root and the right to mount");
        return;
    };
    server.start().await;
    let (client, base) = (server.client.clone(), server.base.clone());
    let admin = server.token("ada@sluice.example", &[Role::Admin], &[], None);
    let dp = server.token(
        "dana@network.example",
        &[Role::Researcher],
        &[],
        Some("DP Research Network"),
    );
    let rita = server.token("rita@uni.example", &[Role::Researcher], &[], None);
    let dp_query =
        "/v1/datasets/hospital-admissions/aggregate?group_by=region&measures=count&epsilon=0.1";
    let data = "/v1/datasets/vaccination-coverage/data?limit=5&format=csv";
    assert_eq!(server.get(data, None).await.status(), 200);
    assert_eq!(server.get(dp_query, Some(&dp)).await.status(), 200);
    let description = |text: &str| json!({ "description": text });
    let patch = |body: Value| {
        client
            .patch(format!("{base}/v1/datasets/{ID}"))
            .bearer_auth(&admin)
            .json(&body)
            .send()
    };
    assert_eq!(
        patch(description("before the disk filled"))
            .await
            .unwrap()
            .status(),
        200
    );

    let filler = disk.fill();
    // The trail's last page may have room for a few records yet.
    let mut answered = 0;
    while server.get(data, None).await.status() == 200 {
        answered += 1;
        assert!(answered < 200, "the full disk never showed");
    }
    for _ in 0..3 {
        let r = server.get(data, None).await;
        assert_eq!(r.status(), 503, "data with a full disk");
        problem(r, 503, "audit-unavailable").await;
    }
    assert_eq!(server.get(dp_query, Some(&dp)).await.status(), 503);
    let r = patch(description("while the disk was full")).await.unwrap();
    problem(r, 503, "storage-unavailable").await;
    let r = client
        .post(format!("{base}/v1/datasets/{ID}/access-requests"))
        .bearer_auth(&rita)
        .json(&json!({
            "project_title": "t", "purpose": "p", "columns": ["region"], "duration_days": 30
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503, "{}", r.text().await.unwrap());
    assert_eq!(server.get("/readyz", None).await.status(), 503);
    let meta = server.get_json(&format!("/v1/datasets/{ID}"), None).await;
    assert_eq!(
        meta["description"], "before the disk filled",
        "an unrecorded change applied"
    );

    // Room again: the server finds out by itself (a replica out of
    // rotation gets no requests to tell it), then serves.
    std::fs::remove_file(&filler).unwrap();
    let mut status = 0;
    for _ in 0..50 {
        status = server.get("/readyz", None).await.status().as_u16();
        if status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, 200, "/readyz stayed 503 with room on the disk");
    assert_eq!(server.get(data, None).await.status(), 200);
    assert_eq!(server.get(dp_query, Some(&dp)).await.status(), 200);
    assert_eq!(patch(description("after")).await.unwrap().status(), 200);

    // Fill again and kill while full: the restart finds whole files.
    let filler = disk.fill();
    while server.get(data, None).await.status() == 200 {}
    assert_eq!(server.get(dp_query, Some(&dp)).await.status(), 503);
    server.kill();
    std::fs::remove_file(&filler).unwrap();
    server.start().await;
    assert_eq!(server.get(dp_query, Some(&dp)).await.status(), 200);
    server.kill();
    let audit = server.state().join("audit");
    let (report, problems) = sluice::audit::verify_all(&audit, &Default::default());
    assert!(problems.is_empty(), "{problems:?}");
    assert!(report.torn.is_empty(), "{:?}", report.torn);
    let records = sluice::audit::read_all(&audit).unwrap();
    assert!(
        records
            .iter()
            .any(|r| r.event == sluice::audit::Event::AuditRepair),
        "the cut-back is recorded"
    );
    let ledger = std::fs::read_to_string(server.state().join("privacy-ledger.jsonl")).unwrap();
    assert!(
        ledger
            .lines()
            .all(|l| serde_json::from_str::<Value>(l).is_ok()),
        "{ledger}"
    );
    // At least one entry per released answer (an answer refused after
    // its spend was durable costs its spend: never the other way).
    assert!(ledger.lines().count() >= 3, "{ledger}");
}

/// A pending access request in `server`'s state.
fn pending_request(server: &BinaryServer, subject: &str) -> String {
    let store = sluice::access_request::RequestStore::open(&server.state()).unwrap();
    store
        .create(sluice::access_request::NewRequest {
            dataset: ID.parse().unwrap(),
            subject: subject.into(),
            organisation: None,
            project_title: "Readmissions".into(),
            purpose: "A study".into(),
            columns: vec!["region".into(), "age_band".into()],
            duration_days: 30,
        })
        .unwrap()
        .id
}

fn status_of(server: &BinaryServer, id: &str) -> String {
    let store = sluice::access_request::RequestStore::open(&server.state()).unwrap();
    store.get(id).unwrap().status.as_str().to_owned()
}

fn grant_in_policy(server: &BinaryServer, id: &str) -> bool {
    let text = std::fs::read_to_string(server.policy()).unwrap();
    sluice::policy::Policy::parse(&text, "p")
        .unwrap()
        .grants
        .iter()
        .any(|g| g.id == id)
}

/// Finding 5: an approval killed at each of its steps is, at the next
/// command or server start, either not done (pending, no grant) or done
/// (approved, grant in force): never a grant in force on a pending
/// request.
#[tokio::test]
async fn an_approval_killed_at_every_step_is_finished_or_undone() {
    let mut server = BinaryServer::with_samples("policy_poll_ms = 60000", ROWS, None);
    write_policy(server.policy(), TEST_POLICY);
    for (n, point) in ["approve:intent", "approve:policy"].into_iter().enumerate() {
        let id = pending_request(&server, &format!("r{n}@uni.example"));
        server.env = vec![("SLUICE_CRASH_AT".into(), point.into())];
        let crashed = server.run(&["access", "approve", &id]);
        assert!(!crashed.status.success(), "{point}: did not crash");
        server.env.clear();
        let written = grant_in_policy(&server, &id);
        assert_eq!(written, point == "approve:policy", "{point}");
        assert_eq!(
            status_of(&server, &id),
            "pending",
            "{point}: before any repair"
        );
        // The next command finishes or undoes it first.
        let again = server.run(&["access", "approve", &id]);
        if written {
            assert!(!again.status.success());
            let stderr = String::from_utf8_lossy(&again.stderr);
            assert!(stderr.contains("finished the approval"), "{stderr}");
            assert!(stderr.contains("already approved"), "{stderr}");
        } else {
            succeeded(&again);
        }
        assert_eq!(status_of(&server, &id), "approved", "{point}");
        assert!(grant_in_policy(&server, &id), "{point}");
    }
    // The server's start finishes one too, and its record follows.
    let id = pending_request(&server, "r9@uni.example");
    server.env = vec![("SLUICE_CRASH_AT".into(), "approve:policy".into())];
    assert!(!server.run(&["access", "approve", &id]).status.success());
    server.env.clear();
    server.start().await;
    assert_eq!(status_of(&server, &id), "approved");
    let reject = server.run(&["access", "reject", &id, "--reason", "no"]);
    assert!(!reject.status.success());
    server.kill();
}

/// Finding 6: a catalogue change killed after its record is durable but
/// before its manifest is written is not in force; one killed after the
/// manifest is written is in force with its record (the intent, carrying
/// the fields it changed).
#[tokio::test]
async fn a_catalogue_change_killed_at_every_step_is_never_in_force_unrecorded() {
    let mut server = BinaryServer::with_samples("policy_poll_ms = 60000", ROWS, None);
    write_policy(server.policy(), TEST_POLICY);
    let admin = server.token("ada@sluice.example", &[Role::Admin], &[], None);
    for point in ["commit:recorded", "commit:written"] {
        server.env = vec![("SLUICE_CRASH_AT".into(), point.into())];
        server.start().await;
        let text = format!("edited, then killed at {point}");
        let sent = server
            .client
            .patch(server.url(&format!("/v1/datasets/{ID}")))
            .bearer_auth(&admin)
            .json(&json!({ "description": text }))
            .send()
            .await;
        assert!(sent.is_err(), "{point}: the server answered");
        let _ = server.wait();
        server.env.clear();
        server.start().await;
        let meta = server.get_json(&format!("/v1/datasets/{ID}"), None).await;
        let applied = meta["description"] == text.as_str();
        assert_eq!(applied, point == "commit:written", "{point}");
        server.kill();
        let records = sluice::audit::read_all(&server.state().join("audit")).unwrap();
        let intent = records
            .iter()
            .rev()
            .find(|r| r.event == sluice::audit::Event::Edit)
            .expect("the change's record");
        assert_eq!(intent.phase, Some(sluice::audit::Phase::Intent), "{point}");
        assert!(
            intent
                .changes
                .iter()
                .any(|c| c.field == "description" && c.new.as_deref() == Some(text.as_str())),
            "{point}: {intent:?}"
        );
        let (_, problems) =
            sluice::audit::verify_all(&server.state().join("audit"), &Default::default());
        assert!(problems.is_empty(), "{point}: {problems:?}");
    }
}

/// Finding 2: a reader slower than the floor rate gives its place back,
/// and sees its answer end in an error, never as a whole file; a greedy
/// caller holds no more than its share, so a newcomer is served at once.
#[tokio::test]
async fn slow_readers_are_cut_off_and_greedy_callers_hold_only_their_share() {
    // Waits in line end (1 s) well before unread answers are cut (4 s).
    let limits = "\n[limits]\nmax_running_slices = 4\nmin_reader_bytes_per_sec = 10000000\nslow_reader_grace_secs = 4\nslice_queue_secs = 1\n";
    let mut server = BinaryServer::with_samples(limits, 1_000_000, Some(ID));
    write_policy(
        server.policy(),
        "[[grant]]\nid = \"whole\"\nsubjects = [\"greedy@uni.example\", \"new@uni.example\"]\ndataset = \"hospital-admissions\"\npurpose = \"p\"\n",
    );
    server.start().await;
    // Tens of megabytes: more than the socket buffers between the two.
    let whole = "/v1/datasets/hospital-admissions/data?format=csv";
    let greedy = server.token("greedy@uni.example", &[Role::Researcher], &[], None);
    // The greedy caller opens as many answers as it may and reads none.
    let mut held = Vec::new();
    let mut refused = 0;
    for _ in 0..4 {
        let r = server.get(whole, Some(&greedy)).await;
        match r.status().as_u16() {
            200 => held.push(r),
            503 => refused += 1,
            other => panic!("{other}"),
        }
    }
    // Alone it may hold half the places; the others waited and were refused.
    assert_eq!((held.len(), refused), (2, 2));
    // A newcomer is served at once.
    let started = std::time::Instant::now();
    let new = server.token("new@uni.example", &[Role::Researcher], &[], None);
    // (Without the pseudonym column: a page that shows pseudonyms is cut
    // from a sort of the whole answer, which is not what this measures.)
    let newcomer = server
        .get(&format!("{whole}&limit=5&columns=region"), Some(&new))
        .await;
    assert_eq!(newcomer.status(), 200);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );

    // The greedy answers, never read, are cut off: read now, each ends in
    // an error, short of the whole table.
    tokio::time::sleep(Duration::from_secs(6)).await;
    for mut r in held {
        let mut bytes = 0usize;
        let ended = loop {
            match r.chunk().await {
                Ok(Some(chunk)) => bytes += chunk.len(),
                Ok(None) => break "cleanly",
                Err(_) => break "in an error",
            }
        };
        assert_eq!(ended, "in an error", "after {bytes} bytes");
    }
    server.kill();
    let records = sluice::audit::read_all(&server.state().join("audit")).unwrap();
    let aborted = records
        .iter()
        .filter(|r| {
            r.subject.as_deref() == Some("greedy@uni.example")
                && r.outcome == Some(sluice::audit::Outcome::ClientAborted)
        })
        .count();
    assert_eq!(aborted, 2);
}

/// A policy applied while the server was stopped is recorded, with what it
/// changes, before the restarted server serves anything.
#[tokio::test]
async fn a_policy_changed_while_stopped_is_recorded_at_start() {
    let mut server = BinaryServer::with_samples("policy_poll_ms = 60000", ROWS, None);
    write_policy(server.policy(), TEST_POLICY);
    server.start().await;
    server.kill();
    let widened = TEST_POLICY.replace("row_filter = \"region = 'north'\"\nunmask", "unmask");
    let draft = server.path().join("draft.toml");
    std::fs::write(&draft, &widened).unwrap();
    succeeded(&server.run(&["policy", "apply", draft.to_str().unwrap()]));
    server.start().await;
    server.kill();
    let records = sluice::audit::read_all(&server.state().join("audit")).unwrap();
    let at_start: Vec<&sluice::audit::Record> = records
        .iter()
        .filter(|r| r.event == sluice::audit::Event::PolicyReload)
        .collect();
    // The first start records every grant; the second, the one changed.
    assert_eq!(at_start.len(), 2, "{at_start:?}");
    assert!(at_start[0].changes.len() >= 8);
    let changed: Vec<&str> = at_start[1]
        .changes
        .iter()
        .map(|c| c.field.as_str())
        .collect();
    assert_eq!(changed, ["grant 'north-planning'"]);
    assert!(at_start[1].changes[0].widens);
}
