"""Arrow Flight SQL with real clients at pinned versions (ADBC's Flight SQL
driver through its DB-API, polars through ADBC, pyarrow.flight), over TLS
with the development CA, against the real binary: the same callers, policy
and audit as HTTPS, and the same answers, table for table."""

import subprocess
import urllib.parse

import pyarrow as pa
import pyarrow.flight as flight
import pytest

from benchlib import flight_sql_command as command
from conftest import RAW_IDENTIFIERS, binary, running_server

FLIGHT_POLICY = """
[[grant]]
id = "flight-aggregate"
subjects = ["agnes@stats.example"]
dataset = "hospital-admissions"
purpose = "aggregate statistics over Flight SQL"
mode = "aggregate"
expires = 2099-12-31
"""

#: The start of every refusal of a statement's shape.
WHAT_MAY_BE_ASKED = "Sluice answers SELECT * or columns FROM a dataset"

HOSPITAL = '"hospital-admissions"'


def mint(server, *args) -> str:
    return subprocess.run(
        [binary(), "--config", server.work / "sluice.toml", "token", *args],
        check=True, capture_output=True, text=True,
    ).stdout.strip()


@pytest.fixture(scope="module")
def fs(tmp_path_factory):
    with running_server(tmp_path_factory.mktemp("flight"), policy=FLIGHT_POLICY) as server:
        server.agnes = mint(server, "--sub", "agnes@stats.example", "--role", "researcher")
        yield server


def connect(server, token=None, **options):
    from adbc_driver_flightsql import DatabaseOptions, dbapi

    kwargs = {DatabaseOptions.TLS_ROOT_CERTS.value: server.ca.read_text()}
    if token:
        kwargs[DatabaseOptions.AUTHORIZATION_HEADER.value] = f"Bearer {token}"
    kwargs.update(options)
    return dbapi.connect(server.flight, db_kwargs=kwargs)


def over_adbc(server, sql, token=None, params=None, **options) -> pa.Table:
    with connect(server, token, **options) as conn, conn.cursor() as cur:
        cur.execute(sql, params)
        return cur.fetch_arrow_table()


def over_https(server, path, token) -> pa.Table:
    return pa.ipc.open_stream(server.get(path, token=token)).read_all()


def refusal(server, sql, token) -> str:
    """The error message a statement gets over ADBC."""
    with pytest.raises(Exception) as caught:
        over_adbc(server, sql, token)
    return str(caught.value)


def q(text: str) -> str:
    return urllib.parse.quote(text)


def audit(server, sub: str) -> list:
    import json

    body = server.get(f"/v1/audit?sub={q(sub)}&page_size=1000", token=server.admin)
    return json.loads(body)["records"]


def test_answers_are_the_https_answers_for_the_same_request(fs):
    # A researcher with a grant (masks on), one whose grant filters rows,
    # and an open dataset read anonymously: each table equal to HTTPS's.
    cases = [
        (fs.token, f"SELECT * FROM {HOSPITAL} WHERE length_of_stay > 3 LIMIT 500 OFFSET 7",
         "/v1/datasets/hospital-admissions/data?filter=" + q("length_of_stay > 3") + "&limit=500&offset=7"),
        (fs.north, f"SELECT patient_id, age, region, admission_date FROM health.{HOSPITAL}",
         "/v1/datasets/hospital-admissions/data?columns=patient_id,age,region,admission_date"),
        (None, 'SELECT * FROM "school-enrolment" WHERE region IN (\'north\', \'east\')',
         "/v1/datasets/school-enrolment/data?filter=" + q("region IN ('north', 'east')")),
    ]
    for token, sql, path in cases:
        over_flight = over_adbc(fs, sql, token)
        over_http = over_https(fs, path, token or False)
        assert over_flight.num_rows > 0, sql
        assert over_flight.equals(over_http), sql
    north = over_adbc(fs, f"SELECT region FROM {HOSPITAL}", fs.north)
    assert set(north.column("region").to_pylist()) == {"north"}


def test_tables_of_counts_are_the_aggregate_answers(fs):
    sql = f"SELECT region, sex, count(*), avg(length_of_stay) FROM {HOSPITAL} GROUP BY region, sex"
    over_flight = over_adbc(fs, sql, fs.agnes)
    over_http = over_https(
        fs, "/v1/datasets/hospital-admissions/aggregate?group_by=region,sex&measures=count,mean(length_of_stay)",
        fs.agnes,
    )
    assert over_flight.num_rows > 0
    assert over_flight.equals(over_http)
    # Aggregate-only access reads no rows, whatever the front door.
    assert "aggregate" in refusal(fs, f"SELECT region FROM {HOSPITAL}", fs.agnes).lower()


def test_get_objects_lists_what_the_caller_may_read(fs):
    def objects(token):
        with connect(fs, token) as conn:
            found = {}
            for catalog in conn.adbc_get_objects().read_all().to_pylist():
                for schema in catalog["catalog_db_schemas"]:
                    for table in schema["db_schema_tables"]:
                        found[table["table_name"]] = (
                            schema["db_schema_name"],
                            [c["column_name"] for c in table["table_columns"] or []],
                        )
            return found

    alice = objects(fs.token)
    assert alice["hospital-admissions"][0] == "health"
    columns = alice["hospital-admissions"][1]
    assert "region" in columns and "patient_id" in columns
    assert not set(RAW_IDENTIFIERS) - {"patient_id"} & set(columns), columns
    assert "nhs_number" not in columns
    anonymous = objects(None)
    assert "school-enrolment" in anonymous
    assert "hospital-admissions" not in anonymous and "school-results" not in anonymous


def test_polars_reads_through_adbc(fs):
    import polars as pl

    with connect(fs, fs.token) as conn:
        frame = pl.read_database(
            f"SELECT region, length_of_stay FROM {HOSPITAL} WHERE region = 'south'", connection=conn
        )
    assert frame.height > 0 and frame.columns == ["region", "length_of_stay"]
    assert frame["region"].unique().to_list() == ["south"]


def test_prepared_statements_bind_values_never_sql(fs):
    sql = f"SELECT region, sex FROM {HOSPITAL} WHERE region = ? AND length_of_stay >= ?"
    table = over_adbc(fs, sql, fs.token, params=("north", 2))
    assert table.num_rows > 0 and set(table.column("region").to_pylist()) == {"north"}
    # A value that is SQL stays a value: no region is called that.
    injected = over_adbc(fs, sql, fs.token, params=("north' OR '1'='1", 0))
    assert injected.num_rows == 0
    # Quotes the template doubles stay doubled once a value is bound, so
    # the value cannot close the template's string and open its own SQL.
    template = (f"SELECT region FROM {HOSPITAL} WHERE discharge_destination <> 'a''' "
                "AND region = ? AND discharge_destination <> '''b'")
    assert over_adbc(fs, template, fs.token, params=("' OR region <> '",)).num_rows == 0


def test_hostile_statements_are_refused_audited_and_the_server_keeps_serving(fs):
    hostile = {
        f"SELECT nhs_number FROM {HOSPITAL}": "nhs_number",
        f'SELECT * FROM {HOSPITAL} JOIN "school-results" ON 1 = 1': "join",
        f"SELECT * FROM {HOSPITAL} -- WHERE region = 'north'": "comment",
        f"SELECT * FROM {HOSPITAL}; SELECT * FROM \"school-results\"": "more than one statement",
        f"SELECT upper(patient_id) FROM {HOSPITAL}": "not count",
        f"SELECT * FROM {HOSPITAL} WHERE region = '{'x' * 70000}'": "longer than",
        # Chains this long once overflowed the parser's stack.
        f"SELECT region FROM {HOSPITAL} WHERE length_of_stay = 1{' + 1' * 3000}": "words and symbols",
        f"SELECT region FROM {HOSPITAL} WHERE length_of_stay{'::int' * 3000} > 1": "words and symbols",
        f"SELECT * FROM {HOSPITAL} WHERE length(nhs_number) > 0": "nhs_number",
        f"SELECT * FROM {HOSPITAL} ORDER BY age": "ORDER BY",
        "SELECT * FROM (SELECT * FROM \"hospital-admissions\")": "subquery",
        f"SELECT * FROM {HOSPITAL} WHERE region = (SELECT max(region) FROM {HOSPITAL})": "",
        "DELETE FROM \"school-enrolment\"": "only SELECT",
    }
    for sql, says in hostile.items():
        message = refusal(fs, sql, fs.north)
        assert says.lower() in message.lower(), (sql[:80], message[:300])
        # The hidden column is named only where the caller named it.
        if "nhs_number" not in sql:
            assert "nhs_number" not in message, (sql[:80], message[:300])
    # A dataset the caller may not read, anonymously: refused by policy.
    assert "denied" in refusal(fs, f"SELECT * FROM {HOSPITAL}", None).lower() or "token" in refusal(
        fs, f"SELECT * FROM {HOSPITAL}", None).lower()
    refused = [r for r in audit(fs, "nora@nhs.example") if r.get("decision") in ("refused", "deny")]
    assert len(refused) >= len(hostile), [r.get("reason") for r in refused]
    # Still serving, over both doors.
    assert over_adbc(fs, f"SELECT region FROM {HOSPITAL} LIMIT 3", fs.north).num_rows == 3
    assert fs.get("/healthz", token=False)


def test_bad_tokens_are_unauthenticated(fs):
    message = refusal(fs, 'SELECT * FROM "school-enrolment"', "not-a-token")
    assert "unauthenticated" in message.lower() or "invalid-token" in message.lower()


def flight_client(server) -> flight.FlightClient:
    return flight.FlightClient(server.flight, tls_root_certs=server.ca.read_bytes())


def test_pyarrow_flight_basic_handshake_and_tickets_bound_to_their_caller(fs):
    client = flight_client(fs)
    header = client.authenticate_basic_token("token", fs.token)
    options = flight.FlightCallOptions(headers=[header])
    sql = f"SELECT region, age FROM {HOSPITAL} LIMIT 40"
    info = client.get_flight_info(flight.FlightDescriptor.for_command(command(sql)), options)
    assert info.schema.names == ["region", "age"]
    ticket = info.endpoints[0].ticket

    # Someone else holding the ticket opens nothing; nor does anyone without
    # a token (pyarrow raises NOT_FOUND as a KeyError).
    not_opened = (flight.FlightError, pa.ArrowKeyError)
    other = flight.FlightCallOptions(headers=[(b"authorization", f"Bearer {fs.north}".encode())])
    with pytest.raises(not_opened):
        client.do_get(ticket, other).read_all()
    with pytest.raises(not_opened):
        client.do_get(ticket).read_all()

    table = client.do_get(ticket, options).read_all()
    assert table.num_rows == 40
    assert table.equals(over_https(fs, "/v1/datasets/hospital-admissions/data?columns=region,age&limit=40", fs.token))
    with pytest.raises(not_opened):
        client.do_get(ticket, options).read_all()  # a ticket opens once

    with pytest.raises(flight.FlightUnauthenticatedError):
        client.authenticate_basic_token("token", "wrong")


def test_values_bound_to_nobodys_statement_are_not_read(fs):
    """DoPut to a prepared statement that is not the caller's is refused
    before its values are read (they were once collected whole first)."""
    client = flight_client(fs)
    handle = command(b"0" * 32, "CommandPreparedStatementQuery")
    big = pa.table({"v": ["x" * (512 << 10)]})
    with pytest.raises((flight.FlightError, pa.ArrowKeyError)) as refused:
        writer, _ = client.do_put(flight.FlightDescriptor.for_command(handle), big.schema)
        for _ in range(16):
            writer.write_table(big)
        writer.close()
    assert "prepared-statement-not-found" in str(refused.value)
    assert fs.get("/healthz", token=False)


def test_type_info_for_jdbc_and_bi_tools(fs):
    """GetXdbcTypeInfo: the SQL types answers are made of, as JDBC's
    getTypeInfo asks for them."""
    client = flight_client(fs)
    options = flight.FlightCallOptions(headers=[(b"authorization", f"Bearer {fs.token}".encode())])
    info = client.get_flight_info(
        flight.FlightDescriptor.for_command(command(None, "CommandGetXdbcTypeInfo")), options)
    types = client.do_get(info.endpoints[0].ticket, options).read_all()
    names = types.column("type_name").to_pylist()
    assert {"BIGINT", "DOUBLE", "VARCHAR", "DATE", "TIMESTAMP", "BOOLEAN"} <= set(names)
    assert "data_type" in types.schema.names and types.num_rows == len(set(names))


#: Enough rows for three row groups of the sample data (256 Ki rows each).
PART_ROWS = 600_000

PARTS_POLICY = """
[[grant]]
id = "flight-parts"
subjects = ["paula@uni.example"]
dataset = "hospital-admissions"
purpose = "parallel endpoints under a mask and a row filter"
columns = ["age", "region", "length_of_stay", "admission_date"]
row_filter = "region = 'north'"
expires = 2099-12-31
"""

#: A grant the tests below change while its answers are being fetched.
QUINN_GRANT = """
[[grant]]
id = "flight-quinn"
subjects = ["quinn@uni.example"]
dataset = "hospital-admissions"
purpose = "parts fetched across a change of policy"
columns = [{columns}]
expires = 2099-12-31
"""


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    quinn = QUINN_GRANT.format(columns='"age", "region"')
    with running_server(tmp_path_factory.mktemp("flight-parts"), policy=PARTS_POLICY + quinn,
                        rows=PART_ROWS, flight="endpoint_rows = 100000") as server:
        server.paula = mint(server, "--sub", "paula@uni.example", "--role", "researcher")
        server.quinn = mint(server, "--sub", "quinn@uni.example", "--role", "researcher")
        yield server


def partitions(server, sql, token=None) -> list:
    """The statement's endpoints as ADBC sees them, each read on its own."""
    with connect(server, token) as conn, conn.cursor() as cur:
        handles, _ = cur.adbc_execute_partitions(sql)
        tables = []
        for handle in handles:
            cur.adbc_read_partition(handle)
            tables.append(cur.fetch_arrow_table())
        return tables


def test_large_slices_come_as_parallel_endpoints_that_add_up_to_the_https_answer(parts):
    """One endpoint per run of row groups: read side by side, end to end
    they are the HTTPS answer in file order (a `limit` as large as the
    table asks HTTPS for file order), under masks and a row filter too."""
    cases = [
        (None, 'SELECT * FROM "vaccination-coverage"', "/v1/datasets/vaccination-coverage/data?"),
        (parts.paula, f"SELECT age, region, length_of_stay FROM {HOSPITAL} WHERE length_of_stay > 3",
         "/v1/datasets/hospital-admissions/data?columns=age,region,length_of_stay&filter="
         + q("length_of_stay > 3") + "&"),
    ]
    for token, sql, path in cases:
        pieces = partitions(parts, sql, token)
        assert len(pieces) == 3, (sql, len(pieces))
        assert all(p.num_rows > 0 for p in pieces), [p.num_rows for p in pieces]
        whole = over_https(parts, f"{path}limit={PART_ROWS}", token or False)
        assert pa.concat_tables(pieces).equals(whole), sql
        # ADBC's own fetch reads them side by side, in order.
        assert over_adbc(parts, sql, token).equals(whole), sql
    north = pa.concat_tables(partitions(parts, f"SELECT region, age FROM {HOSPITAL}", parts.paula))
    assert set(north.column("region").to_pylist()) == {"north"}
    assert all(a % 5 == 0 for a in north.column("age").to_pylist() if a is not None), \
        "ages stay bucketed in every part"

    # Each part is an answer of its own in the audit trail, saying which.
    records = [r for r in audit(parts, "paula@uni.example")
               if r.get("phase") == "outcome" and r.get("columns") == ["region", "age"]]
    assert sorted(r.get("part") for r in records) == ["1/3", "2/3", "3/3"], records
    assert sum(r["rows"] for r in records) == north.num_rows


def test_pages_caps_and_pseudonyms_are_never_cut(parts):
    """Rows that depend on each other stay one answer: a page (its rows are
    counted across the whole answer) and rows showing a pseudonym."""
    for token, sql in [
        (parts.paula, f"SELECT age, region FROM {HOSPITAL} LIMIT 400000"),
        (parts.token, f"SELECT patient_id, region FROM {HOSPITAL}"),
    ]:
        assert len(partitions(parts, sql, token)) == 1, sql


def test_a_later_part_opens_once_for_its_caller_only(parts):
    client = flight_client(parts)
    mine = flight.FlightCallOptions(headers=[(b"authorization", f"Bearer {parts.paula}".encode())])
    other = flight.FlightCallOptions(headers=[(b"authorization", f"Bearer {parts.token}".encode())])
    sql = f"SELECT region, length_of_stay FROM {HOSPITAL}"
    info = client.get_flight_info(flight.FlightDescriptor.for_command(command(sql)), mine)
    assert len(info.endpoints) == 3
    later = info.endpoints[2].ticket
    not_opened = (flight.FlightError, pa.ArrowKeyError)
    with pytest.raises(not_opened):
        client.do_get(later, other).read_all()
    with pytest.raises(not_opened):
        client.do_get(later).read_all()
    assert client.do_get(later, mine).read_all().num_rows > 0
    with pytest.raises(not_opened):
        client.do_get(later, mine).read_all()
    for endpoint in info.endpoints[:2]:
        client.do_get(endpoint.ticket, mine).read_all()


def test_a_later_part_is_not_served_once_the_access_it_was_cut_under_changed(parts):
    """The parts of one answer are cut under one plan: after the grant
    changes (here: a column more), a later part of an answer made before is
    refused, not served under the new plan beside parts made under the old."""
    import time
    from conftest import POLICY, sealed_policy

    client = flight_client(parts)
    quinn = flight.FlightCallOptions(headers=[(b"authorization", f"Bearer {parts.quinn}".encode())])
    sql = f"SELECT * FROM {HOSPITAL}"
    info = client.get_flight_info(flight.FlightDescriptor.for_command(command(sql)), quinn)
    assert len(info.endpoints) == 3 and info.schema.names == ["age", "region"]
    first = client.do_get(info.endpoints[0].ticket, quinn).read_all()

    wider = QUINN_GRANT.format(columns='"age", "region", "length_of_stay"')
    (parts.work / "policy.toml").write_text(sealed_policy(POLICY + PARTS_POLICY + wider))
    deadline = time.time() + 30
    while True:
        try:
            over_https(parts, "/v1/datasets/hospital-admissions/data?columns=length_of_stay&limit=1", parts.quinn)
            break
        except Exception:
            assert time.time() < deadline, "the policy was not reloaded"
            time.sleep(0.2)

    # pyarrow raises FAILED_PRECONDITION as ArrowInvalid.
    with pytest.raises((flight.FlightError, pa.ArrowInvalid)) as refused:
        client.do_get(info.endpoints[1].ticket, quinn).read_all()
    assert "access-changed" in str(refused.value)
    assert first.num_rows > 0 and first.schema.names == ["age", "region"]
    # The refusal is audited as that part of that statement.
    records = [r for r in audit(parts, "quinn@uni.example") if r.get("part") == "2/3"]
    assert any(r.get("decision") not in (None, "allow") for r in records), records


def test_a_personal_token_scoped_elsewhere_opens_none_of_its_subjects_tickets(parts):
    import json
    import urllib.request

    request = urllib.request.Request(
        parts.url("/v1/me/tokens"), method="POST",
        data=json.dumps({"name": "vaccination only", "dataset": "vaccination-coverage"}).encode(),
        headers={"Authorization": f"Bearer {parts.paula}", "Content-Type": "application/json"})
    scoped = json.loads(urllib.request.urlopen(request, context=parts.context).read())["token"]
    client = flight_client(parts)
    paula = flight.FlightCallOptions(headers=[(b"authorization", f"Bearer {parts.paula}".encode())])
    elsewhere = flight.FlightCallOptions(headers=[(b"authorization", f"Bearer {scoped}".encode())])
    info = client.get_flight_info(
        flight.FlightDescriptor.for_command(command(f"SELECT region, age FROM {HOSPITAL}")), paula)
    for endpoint in info.endpoints:
        with pytest.raises((flight.FlightError, pa.ArrowKeyError)):
            client.do_get(endpoint.ticket, elsewhere).read_all()
    assert sum(client.do_get(e.ticket, paula).read_all().num_rows for e in info.endpoints) > 0


def test_a_later_part_fetched_while_the_engine_is_full_can_be_fetched_again(tmp_path):
    """One engine place, held by another caller's unfetched answer: a later
    part's fetch that gives up while it waits in line (a client deadline),
    or is turned away, leaves the part to be fetched again, once."""
    with running_server(tmp_path, policy=PARTS_POLICY, rows=PART_ROWS,
                        flight="endpoint_rows = 100000",
                        limits="max_running_slices = 1\nslice_queue_secs = 5") as server:
        paula_token = mint(server, "--sub", "paula@uni.example", "--role", "researcher")
        client = flight_client(server)
        paula = flight.FlightCallOptions(headers=[(b"authorization", f"Bearer {paula_token}".encode())])
        alice = flight.FlightCallOptions(headers=[(b"authorization", f"Bearer {server.token}".encode())])
        info = client.get_flight_info(flight.FlightDescriptor.for_command(
            command(f"SELECT region, age FROM {HOSPITAL}")), paula)
        assert len(info.endpoints) == 3
        client.do_get(info.endpoints[0].ticket, paula).read_all()

        # Alice's answer (too big for its buffer) takes the one place and
        # waits for its DoGet.
        held = client.get_flight_info(flight.FlightDescriptor.for_command(
            command(f"SELECT * FROM {HOSPITAL}")), alice)
        impatient = flight.FlightCallOptions(
            headers=[(b"authorization", f"Bearer {paula_token}".encode())], timeout=1.0)
        with pytest.raises((flight.FlightError, pa.ArrowException)):
            client.do_get(info.endpoints[1].ticket, impatient).read_all()
        assert client.do_get(held.endpoints[0].ticket, alice).read_all().num_rows == PART_ROWS

        rest = [client.do_get(e.ticket, paula).read_all() for e in info.endpoints[1:]]
        assert all(t.num_rows > 0 for t in rest)
        with pytest.raises((flight.FlightError, pa.ArrowKeyError)):
            client.do_get(info.endpoints[1].ticket, paula).read_all()  # once
