"""The load generator's pure parts: counters and histograms, users files, shares of a
distributed run, the CSV columns, the failure threshold."""

from __future__ import annotations

import csv
import json
import random
import re
import statistics

import pytest

from skinnysip.cli.load import max_failures_exceeded
from skinnysip.load.distributed import _config_dict, _config_from, worker_configs
from skinnysip.load.report import CSV_COLUMNS, CsvSink
from skinnysip.load.runner import Interval
from skinnysip.load.scenarios import LoadConfig, User, read_users
from skinnysip.load.stats import Counters, LatencyHistogram


def test_histogram_percentiles_within_two_percent_of_exact() -> None:
    rng = random.Random(7)
    values = [rng.lognormvariate(0, 1) / 100 for _ in range(5000)]  # seconds, ~10 ms median
    h = LatencyHistogram()
    for v in values:
        h.add(v)
    ordered = sorted(v * 1000 for v in values)
    for q in (50, 90, 99):
        exact = ordered[max(0, -(-len(ordered) * q // 100) - 1)]
        got = h.percentile(q)
        assert got is not None and exact <= got <= exact * 1.0201, (q, exact, got)
    assert h.mean_ms == pytest.approx(statistics.fmean(ordered))
    assert h.stdev_ms == pytest.approx(statistics.pstdev(ordered), rel=1e-6)
    assert h.max_ms == pytest.approx(ordered[-1])
    assert LatencyHistogram().percentile(50) is None


def test_counters_merge_equals_counting_in_one() -> None:
    rng = random.Random(3)
    whole, parts = Counters(), [Counters() for _ in range(3)]
    for i in range(300):
        part = parts[i % 3]
        value = rng.random() / 10 if i % 5 else None
        for c in (whole, part):
            c.attempted += 1
            if i % 7 == 0:
                c.failure("486" if i % 2 else "timeout", "FailedUnexpectedMessage", 0.01)
            else:
                c.success(value, 1.0)
                c.refreshes += 2
                c.refresh_challenges += i % 2
                c.media({"received": {"expected": 100, "lost": i % 3, "jitter_ms": 1.5, "packets": 100},
                         "quality": {"mos": 4.0 + (i % 4) / 10}})
    merged = Counters()
    for part in parts:
        merged.merge(Counters.from_dict(part.to_dict()))  # as the workers send them
    for name in ("attempted", "successful", "failed", "finished", "rtp_expected", "rtp_lost", "mos_count",
                 "refreshes", "refresh_challenges"):
        assert getattr(merged, name) == getattr(whole, name)
    assert merged.failed_by_status == whole.failed_by_status
    assert merged.response_time.buckets == whole.response_time.buckets
    assert merged.response_time.percentile(90) == whole.response_time.percentile(90)
    assert merged.mos == whole.mos and merged.mos_min == whole.mos_min == 4.0
    assert merged.loss == pytest.approx(whole.rtp_lost / whole.rtp_expected, abs=1e-4)


def test_users_file_sipp_format(tmp_path) -> None:
    path = tmp_path / "users.csv"
    path.write_text("RANDOM\nalice;wonderland\n# comment\n\nbob;builder;bob-auth\ncarol\n")
    users, order = read_users(path)
    assert order == "RANDOM"
    assert users == [User("alice", "wonderland"), User("bob", "builder", "bob-auth"), User("carol")]
    path.write_text("dave,secret\n")
    assert read_users(path) == ([User("dave", "secret")], "SEQUENTIAL")
    path.write_text("SEQUENTIAL\n")
    with pytest.raises(ValueError, match="no users"):
        read_users(path)


@pytest.mark.parametrize(("text", "where"), [
    ("root:x:0:0:root:/root:/bin/bash\n", ":1: 'root:x:0:0:root:/root:/bin/bash' is not a SIP user name "
     "(user;password[;auth_user] lines)"),
    ("SEQUENTIAL\nal ice;pw\n", ":2: 'al ice' is not a SIP user name"),
    ("alice@example.com;pw\n", ":1: 'alice@example.com' is not a SIP user name (user;password[;auth_user] lines)"),
    ("RANDOM,PRINTF=2\nu<%d>;pw\n", ":2: 'u<0>' is not a SIP user name"),
])
def test_users_file_lines_that_are_not_users_are_refused(tmp_path, text: str, where: str) -> None:
    # a wrong file (/etc/passwd, a CSV of e-mail addresses) is named at its line, not sent as users
    path = tmp_path / "users.csv"
    path.write_text(text)
    with pytest.raises(ValueError) as refused:
        read_users(path)
    assert str(refused.value) == f"{path}{where}"


def test_users_file_sipp_authentication_field(tmp_path) -> None:
    """SIPp users keep credentials as the [authentication] keyword their scenario injects."""
    path = tmp_path / "users.csv"
    path.write_text("SEQUENTIAL\r\n20000;20000;[authentication username=20000 password=a111111]\r\n"
                    "alice;pbx.example;[authentication username=alice-auth password=\"p w\"]\n"
                    "bob;pbx.example;[Authentication password=b0b]\n")
    users, order = read_users(path)
    assert order == "SEQUENTIAL"
    assert users == [User("20000", "a111111", "20000"), User("alice", "p w", "alice-auth"),
                     User("bob", "b0b")]
    path.write_text("carol;[authentication username=carol]\n")
    with pytest.raises(ValueError, match=r"users.csv:1: .*no password="):
        read_users(path)


def test_users_file_sipp_printf(tmp_path) -> None:
    path = tmp_path / "users.csv"
    path.write_text("SEQUENTIAL,PRINTF=5,PRINTFOFFSET=1001,PRINTFMULTIPLE=2\n"
                    "%d;pw%d;[authentication username=%d password=secret%%%d]\nu%04d;x\n")
    users, _ = read_users(path)
    assert users == [User("1001", "secret%1001", "1001"), User("u1003", "x"),
                     User("1005", "secret%1005", "1005"), User("u1007", "x"),
                     User("1009", "secret%1009", "1009")]
    path.write_text("RANDOM,PRINTF=3\nuser%-1d_;pw\n")
    assert read_users(path) == ([User(f"user{i}_", "pw") for i in range(3)], "RANDOM")
    for header, body, message in [
        ("SEQUENTIAL,PRINTF=0", "u%d;pw", "PRINTF=0: a printf file makes"),
        ("SEQUENTIAL,PRINTF=x", "u%d;pw", "PRINTF='x' is not a whole number"),
        ("SEQUENTIAL,COUNT=3", "u%d;pw", "'COUNT=3' is not PRINTF=N"),
        ("SEQUENTIAL,PRINTF=2", "u%s;pw", "may only hold %d formats"),
        ("SEQUENTIAL,PRINTF=2", "u%1.2.3d;pw", "is not a printf %d format"),
    ]:
        path.write_text(f"{header}\n{body}\n")
        with pytest.raises(ValueError, match=re.escape(message)):
            read_users(path)
    # without PRINTF a % is just a character
    path.write_text("USER\n50%25;pw\n")
    assert read_users(path) == ([User("50%25", "pw")], "USER")


def test_users_file_is_read_with_a_cap(tmp_path, monkeypatch) -> None:
    import skinnysip.load.scenarios as scenarios

    path = tmp_path / "users.csv"
    path.write_text("alice;pw\n" * 100)
    monkeypatch.setattr(scenarios, "MAX_USERS_FILE_BYTES", 512)
    with pytest.raises(ValueError, match="larger than"):
        read_users(path)


def test_worker_shares_add_up_and_interleave_users() -> None:
    users = [User(f"u{i}", "pw") for i in range(5)]
    config = LoadConfig("register", "127.0.0.1", rate=100, limit=7, count=1001, users=users,
                        local_ports=(20000, 20099), rtp_ports=(30000, 30099), headers=[("X-Run", "7")])
    shares = worker_configs(config, 3)
    assert sum(s.count or 0 for s in shares) == 1001
    assert sum(s.rate for s in shares) == pytest.approx(100)
    assert all(s.limit == 3 for s in shares)
    ranges = [s.local_ports for s in shares]
    assert ranges == [(20000, 20032), (20033, 20065), (20066, 20098)]
    # attempt k of worker w has index start + k*step: together every index once, as one process
    indexes = sorted(s.index_start + k * s.index_step for s in shares for k in range(s.count or 0))
    assert indexes == list(range(1001))
    assert [config.user_for(i) for i in range(6)] == [shares[i % 3].user_for(i) for i in range(6)]
    assert _config_from(_config_dict(shares[1])) == shares[1]
    assert _config_from(json.loads(json.dumps(_config_dict(shares[1])))) == shares[1]  # as JSON, tuples come back
    assert len(worker_configs(LoadConfig("options", "h", count=2), 4)) == 2  # no empty workers
    with pytest.raises(ValueError):
        worker_configs(LoadConfig("options", "h", local_ports=(1000, 1001)), 3)


def test_config_validation_names_the_field() -> None:
    with pytest.raises(ValueError, match="to:"):
        LoadConfig("call", "h").validate()
    with pytest.raises(ValueError, match="rate"):
        LoadConfig("options", "h", rate=0).validate()
    with pytest.raises(ValueError, match="to:"):
        LoadConfig("message", "h", to="bob@exa mple").validate()
    with pytest.raises(ValueError, match="domain:"):
        LoadConfig("options", "h", domain="a b").validate()
    # a user given by -u or by the library is checked as a users file's line is (it was a
    # "transport" failure of every attempt)
    for bad_user in ("al ice", "alice@example.com", "a:b", "x\r\nVia: y", "%zz", ""):
        with pytest.raises(ValueError, match="users: .* is not a SIP user name"):
            LoadConfig("register", "h", users=[User("alice"), User(bad_user, "pw")]).validate()
    LoadConfig("register", "h", users=[User("alice"), User("+1%20555*97#", "pw")]).validate()
    for bad in ({"transport": "udp", "scenario": "call", "to": "bob"}, {"transport": "tcp", "scenario": "call", "to": "bob"}):
        with pytest.raises(ValueError, match="connection_per_attempt: options, register and message only"):
            LoadConfig(**{"host": "h", "connection_per_attempt": True, **bad}).validate()  # type: ignore[arg-type]
    LoadConfig("register", "h", transport="tls", connection_per_attempt=True).validate()
    with pytest.raises(ValueError, match="srtp: for the calls of call, user and answer"):
        LoadConfig("options", "h", srtp="dtls").validate()
    with pytest.raises(ValueError, match="srtp 'sdes': off, optional, mandatory or dtls"):
        LoadConfig("call", "h", to="bob", srtp="sdes").validate()
    LoadConfig("call", "h", to="bob", srtp="dtls").validate()
    LoadConfig("options", "h", transport="udp", connection_per_attempt=True, local_ports=(5070, 5071)).validate()
    assert LoadConfig("options", "h", port=5070).sip_domain == "h:5070"
    assert LoadConfig("options", "::1", transport="tls").sip_domain == "[::1]"
    assert LoadConfig("message", "h").uri("bob") == "sip:bob@h"
    assert LoadConfig("message", "h").uri("sips:bob@x") == "sips:bob@x"


def test_refresh_config_and_how_long_an_attempt_may_stay_up() -> None:
    with pytest.raises(ValueError, match="refreshes: only the register scenario"):
        LoadConfig("options", "h", refreshes=1).validate()
    with pytest.raises(ValueError, match="refreshes: 0"):
        LoadConfig("register", "h", refreshes=-1).validate()
    with pytest.raises(ValueError, match="refresh_interval"):
        LoadConfig("register", "h", refreshes=1, refresh_interval=0.0).validate()
    LoadConfig("register", "h", refreshes=3, refresh_interval=0.5).validate()
    # the drain and the run's deadline wait this long beyond the transactions
    assert LoadConfig("register", "h", refreshes=3, refresh_interval=0.5, timeout=2.0).attempt_hold == 3 * 2.5
    assert LoadConfig("register", "h", refreshes=2, expires=60, timeout=1.0).attempt_hold == 2 * 31.0
    assert LoadConfig("register", "h").attempt_hold == 0.0  # no call hold for a registration
    assert LoadConfig("call", "h", to="bob", hold=7.0).attempt_hold == 7.0
    share = worker_configs(LoadConfig("register", "h", count=4, refreshes=2, refresh_interval=1.5), 2)[1]
    assert (share.refreshes, share.refresh_interval) == (2, 1.5)
    assert _config_from(json.loads(json.dumps(_config_dict(share)))) == share


def test_rate_steps_config_as_sipp() -> None:
    """-rate_increase/-rate_max: the step that would pass rate_max ends the run, so the steps
    last one interval each up to it, itself included; a fanned-out run steps on the driver."""
    steps = LoadConfig("options", "h", rate=10, rate_increase=20, rate_max=40, rate_interval=5)
    assert steps.stepped and steps.stepped_duration() == 10  # 10/s, 30/s; 50 > 40 ends it
    assert LoadConfig("options", "h", rate=10, rate_increase=15, rate_max=40).stepped_duration() == 3  # 10, 25, 40
    assert LoadConfig("options", "h", rate=10, rate_increase=15).stepped_duration() is None  # no end by steps
    assert LoadConfig("options", "h", rate=10, rate_increase=15, rate_max=40, rate_quit=False,
                      duration=9).stepped_duration() is None
    for bad, match in (({"rate_max": 40}, "rate_max: only with rate_increase"),
                       ({"rate_increase": 5, "rate_max": 5}, "rate_max: must be >= the starting rate 10"),
                       ({"rate_increase": -1}, "rate_increase"), ({"rate_increase": 1, "rate_interval": 0}, "rate_interval"),
                       ({"rate_increase": 5, "rate_max": 50, "rate_quit": False}, "needs a count")):
        with pytest.raises(ValueError, match=match):
            LoadConfig("options", "h", rate=10, **bad).validate()  # type: ignore[arg-type]
    shares = worker_configs(steps, 2)
    assert [(s.rate, s.rate_increase, s.rate_max, s.duration) for s in shares] == [(5, 0.0, None, 15)] * 2
    for share in shares:
        share.validate()
    kept = worker_configs(LoadConfig("options", "h", rate=10, rate_increase=5, duration=7.0), 2)
    assert [s.duration for s in kept] == [7.0, 7.0]


def test_message_log_is_bounded_and_says_what_it_left_out(tmp_path) -> None:
    from skinnysip.load.report import MessageLog
    from skinnysip.net.trace import TraceRecord

    log = MessageLog(tmp_path / "m.log", max_bytes=300)
    record = TraceRecord("received", 1_700_000_000.25, "127.0.0.1:5060", "[::1]:5070", "tcp", "200 OK",
                         b"SIP/2.0 200 OK\r\nX: \xff\r\n\r\n")
    for _ in range(10):
        log(record)
    log.close()
    log(record)  # after close: counted, not written
    text = (tmp_path / "m.log").read_bytes().decode("utf-8")
    blocks = text.count(f"received TCP 127.0.0.1:5060 <- [::1]:5070 ({len(record.raw)} bytes)")
    assert 1 <= blocks < 10 and "SIP/2.0 200 OK\r\nX: \ufffd" in text
    assert text.endswith(f"----- {10 - blocks} more messages not written (the file holds at most 300 octets)\n")
    assert log.left_out == 10 - blocks + 1


def test_a_message_log_that_cannot_write_says_so_once_and_drops_the_rest() -> None:
    from skinnysip.load.report import MessageLog
    from skinnysip.net.trace import TraceRecord

    said: list[str] = []
    log = MessageLog("/dev/full", max_bytes=1 << 20, on_error=said.append)
    record = TraceRecord("sent", 1_700_000_000.0, "127.0.0.1:5070", "127.0.0.1:5060", "udp", "OPTIONS",
                         b"OPTIONS sip:a SIP/2.0\r\n" + b"X: y\r\n" * 2000 + b"\r\n")  # past the buffer
    for _ in range(5):
        log(record)  # never raises
    log.close()
    assert said == ["--trace-msg: writing '/dev/full' stopped: No space left on device"] and log.error == said[0]
    assert log.left_out >= 4


def test_the_csv_header_is_the_csv_modules_and_a_full_disk_is_refused_at_once(tmp_path) -> None:
    path = tmp_path / "h.csv"
    CsvSink(path).close()
    with path.open(newline="") as file:
        assert next(csv.reader(file)) == CSV_COLUMNS
    assert path.read_bytes().endswith(b")\r\n")  # one CRLF line, as csv.DictWriter writes
    with pytest.raises(OSError):
        CsvSink("/dev/full")


def test_warnings_merge_once_and_survive_the_trip_through_plain_data() -> None:
    a, b = Counters(), Counters()
    a.warn("--trace-msg: writing 'x.0' stopped: File too large")
    b.warn("--trace-msg: writing 'x.0' stopped: File too large")
    b.warn("--trace-msg: writing 'x.1' stopped: File too large")
    total = Counters().merge(Counters.from_dict(a.to_dict())).merge(Counters.from_dict(b.to_dict()))
    assert total.warnings == ["--trace-msg: writing 'x.0' stopped: File too large",
                              "--trace-msg: writing 'x.1' stopped: File too large"]
    for i in range(100):
        total.warn(str(i))
    assert len(total.warnings) == 20


@pytest.mark.parametrize(("name", "value", "says"), [
    ("Call-ID", "x", "Call-ID is written by skinnysip itself"),
    ("f", "<sip:a@b>", "From is written by skinnysip itself"),  # a compact form
    ("X-A", "one\r\nVia: injected", "must be one line"),
    ("X-A", "a" * 1025, "at most 1024"),
    ("X:A", "b", "is not a header name"),
    ("", "b", "is not a header name"),
])
def test_added_header_fields_are_checked(name: str, value: str, says: str) -> None:
    with pytest.raises(ValueError, match=re.escape(says)):
        LoadConfig("options", "h", headers=[(name, value)]).validate()


def test_added_header_fields_that_are_fine() -> None:
    LoadConfig("call", "h", to="bob", headers=[("P-Asserted-Identity", "<sip:a@b>"), ("User-Agent", "x"),
                                               ("X-Empty", "")]).validate()
    with pytest.raises(ValueError, match="user scenario writes its own"):
        LoadConfig("user", "h", user_script="s.py", headers=[("X-A", "b")]).validate()
    with pytest.raises(ValueError, match="only the user scenario runs a Python file, not register"):
        LoadConfig("register", "h", user_script="s.py").validate()  # a script given to the wrong scenario


def test_max_failures_count_or_percent() -> None:
    assert not max_failures_exceeded("0", 0, 100)
    assert max_failures_exceeded("0", 1, 100)
    assert not max_failures_exceeded("1%", 1, 100)
    assert max_failures_exceeded("1%", 2, 100)
    assert not max_failures_exceeded("100%", 100, 100)
    for bad in ("x", "-1", "101%", "-5%", "nan%", "inf%"):
        with pytest.raises(ValueError):
            max_failures_exceeded(bad, 0, 0)


def test_csv_has_sipp_names_and_one_row_per_interval(tmp_path) -> None:
    path = tmp_path / "stats.csv"
    sink = CsvSink(path)
    total = Counters()
    for second in range(1, 4):
        period = Counters(attempted=10)
        for _ in range(9):
            period.success(0.005 * second, 0.01)
        period.failure("503", "FailedUnexpectedMessage", 0.3)
        total.merge(period)
        sink(Interval(period, total, float(second), 1.0, 10.0, 0, 1_700_000_000.0, 1_700_000_000.0 + second))
    sink.close()
    rows = list(csv.DictReader(path.open()))
    assert list(rows[0].keys()) == CSV_COLUMNS
    for name in ("SuccessfulCall(C)", "FailedCall(P)", "Retransmissions(C)", "ResponseTime1(C)",
                 "FailedUnexpectedMessage(C)", "OutgoingCall(C)", "CurrentCall", "TargetRate"):
        assert name in CSV_COLUMNS
    assert [int(r["SuccessfulCall(C)"]) for r in rows] == [9, 18, 27]
    assert rows[-1]["FailedByStatus(C)"] == "503:3"
    last = rows[-1]
    buckets = [int(last[c]) for c in CSV_COLUMNS if c.startswith("ResponseTimeRepartition1_")]
    assert sum(buckets) == 30  # every response time in one bucket
    assert int(last["ResponseTimeRepartition1_>=200"]) == 3  # the three 300 ms failures
    assert int(last["ResponseTimeRepartition1_<10"]) >= 9  # the 5 ms ones


def test_csv_period_start_call_lengths_warnings_and_incoming_calls(tmp_path) -> None:
    """``LastResetTime`` is the period's start, ``CallLengthRepartition_*`` SIPp's call-length
    buckets (cumulative), ``Warnings`` the warnings counted, and an answering run's calls are
    ``IncomingCall`` (SIPp's UAS counts them so), with ``OutgoingCall`` 0."""
    from skinnysip.load.report import CALL_LENGTH_REPARTITION_MS

    lengths = [0.005, 0.07, 0.7, 3.0, 12.0]  # seconds: buckets <10, <100, <1000, <5000, >=10000 ms
    for incoming in (False, True):
        path = tmp_path / f"stats-{incoming}.csv"
        sink = CsvSink(path, incoming=incoming)
        period = Counters(attempted=len(lengths), warnings=["--trace-msg: writing stopped"])
        for length in lengths:
            period.success(0.01, length)
        total = Counters()
        total.merge(period)
        sink(Interval(period, total, 2.5, 0.5, 5.0, 1, 1_700_000_000.0, 1_700_000_002.5))
        sink.close()
        (row,) = list(csv.DictReader(path.open()))
        assert row["StartTime"] == "2023-11-14T22:13:20.000+00:00"
        assert row["LastResetTime"] == "2023-11-14T22:13:22.000+00:00"  # now - the 0.5 s period
        assert row["CurrentTime"] == "2023-11-14T22:13:22.500+00:00"
        calls, other = ("IncomingCall", "OutgoingCall") if incoming else ("OutgoingCall", "IncomingCall")
        assert (row[f"{calls}(P)"], row[f"{calls}(C)"], row[f"{other}(P)"], row[f"{other}(C)"]) == ("5", "5", "0", "0")
        assert row["TotalCallCreated"] == "5"
        assert (row["Warnings(P)"], row["Warnings(C)"]) == ("1", "1")
        buckets = {c: int(row[c]) for c in CSV_COLUMNS if c.startswith("CallLengthRepartition_")}
        assert list(buckets) == [f"CallLengthRepartition_<{e}" for e in CALL_LENGTH_REPARTITION_MS] + [
            "CallLengthRepartition_>=10000"]
        assert [buckets[f"CallLengthRepartition_<{e}"] for e in (10, 50, 100, 500, 1000, 5000, 10000)] == [
            1, 0, 1, 0, 1, 1, 0]
        assert buckets["CallLengthRepartition_>=10000"] == 1


def test_live_view_shows_rates_failures_and_call_quality() -> None:
    from rich.console import Console

    from skinnysip.load.report import LiveView

    period = Counters(attempted=5, retransmissions=2)
    for _ in range(4):
        period.success(0.02, 3.0)
        period.media({"received": {"expected": 150, "lost": 3, "jitter_ms": 2.0, "packets": 147},
                      "quality": {"mos": 4.1}})
    period.failure("486", "FailedUnexpectedMessage", 0.05)
    view = LiveView("skinnysip load call", calls=True)
    view(Interval(period, period, 1.0, 1.0, 5.0, 3, 1_700_000_000.0, 1_700_000_001.0))
    console = Console(record=True, width=100)
    console.print(view.render())
    text = console.export_text()
    for expected in ("successful", "486", "retransmissions", "response p99", "MOS", "4.1", "loss", "2 %", "jitter"):
        assert expected in text, (expected, text)
    assert "loop late" not in text and "loop busy" not in text  # shown only once the watchdog says so
    busy = Counters()
    busy.watchdog(0.4, 0.4)
    busy.watchdog(0.4, 0.1)
    view(Interval(busy, busy, 1.0, 1.0, 5.0, 3, 1_700_000_000.0, 1_700_000_001.0))
    console = Console(record=True, width=100)
    console.print(view.render())
    shown = console.export_text()
    assert "loop busy" in shown and "1 of 2 windows" in shown
    period.watchdog(1.2, 0.0)  # late, idle (a stall)
    view(Interval(period, period, 2.0, 1.0, 5.0, 3, 1_700_000_000.0, 1_700_000_002.0))
    console = Console(record=True, width=100)
    console.print(view.render())
    late = console.export_text()
    assert "loop late" in late and "(max 800 ms)" in late
    assert "dead call msgs" not in late  # shown only once a message of no running call came
    period.dead_call_msgs, period.out_of_call_msgs = 3, 1
    view(Interval(period, period, 2.0, 1.0, 5.0, 3, 1_700_000_000.0, 1_700_000_002.0))
    console = Console(record=True, width=100)
    console.print(view.render())
    stray = console.export_text()
    assert re.search(r"dead call msgs\s+.\s+3\s+.\s+3", stray) and re.search(r"out-of-call msgs\s+.\s+1", stray), stray
    # what just happened and what the keys do stand under the table, one line each
    view.note, view.hint = "rate set to 12/s", "keys  + - ±1/s  * / ±10/s  q stop"
    console = Console(record=True, width=100)
    console.print(view.render())
    lines = [line.strip() for line in console.export_text().splitlines()]
    assert lines[-2:] == ["rate set to 12/s", "keys  + - ±1/s  * / ±10/s  q stop"], lines


def test_failure_details_are_bounded_and_travel_with_the_counters(tmp_path) -> None:
    """Counters keep the first MAX_ERRORS failures' texts (also through merge and the dict a
    worker sends); the --trace-err file writes them and counts what it left out."""
    from skinnysip.load.report import MAX_ERRORS_LOGGED, ErrorLogSink
    from skinnysip.load.scenarios import record_failure
    from skinnysip.load.stats import MAX_ERRORS
    from skinnysip.sip.message import parse_message

    request = parse_message(b"OPTIONS sip:pbx.example SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKa\r\n"
                            b"From: <sip:a@pbx.example>;tag=1\r\nTo: <sip:pbx.example>\r\nCall-ID: c1\r\n"
                            b"CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n")
    worker = Counters()
    for i in range(MAX_ERRORS + 5):
        record_failure(worker, "timeout", "FailedMaxUDPRetrans", sent=request, note=f"no final response {i}")  # type: ignore[arg-type]
    assert worker.failed == MAX_ERRORS + 5 and len(worker.errors) == MAX_ERRORS
    assert worker.errors[0].startswith("timeout (FailedMaxUDPRetrans): no final response 0\nsent:\nOPTIONS sip:")
    shipped = Counters.from_dict(worker.to_dict())
    assert shipped.errors == worker.errors
    merged = Counters().merge(shipped).merge(shipped)
    assert merged.errors == worker.errors and merged.failed == 2 * (MAX_ERRORS + 5)

    path = tmp_path / "errors.log"
    sink = ErrorLogSink(path)
    for second in range(MAX_ERRORS_LOGGED // MAX_ERRORS + 2):
        sink(Interval(shipped, shipped, float(second), 1.0, 10.0, 0, 1_700_000_000.0, 1_700_000_000.0 + second))
    sink.close()
    text = path.read_text()
    assert text.count("\n----- ") + 1 == MAX_ERRORS_LOGGED + 1  # the blocks, then the line of what was left out
    failed = (MAX_ERRORS_LOGGED // MAX_ERRORS + 2) * (MAX_ERRORS + 5)
    assert text.rstrip().endswith(f"----- {failed - MAX_ERRORS_LOGGED} more failures not written "
                                  f"(at most {MAX_ERRORS} an interval, {MAX_ERRORS_LOGGED} in all)")


def test_progress_lines_for_a_log_every_ten_seconds() -> None:
    """Without a terminal the run writes one line of its totals every 10 s (not every interval)."""
    from skinnysip.load.report import ProgressLines

    lines: list[str] = []
    sink = ProgressLines(lines.append)
    total = Counters(attempted=30)
    for _ in range(25):
        total.success(0.002, 0.002)
    total.failure("503", "FailedUnexpectedMessage")
    total.failure("timeout", "FailedMaxUDPRetrans")
    total.failure("503", "FailedUnexpectedMessage")
    for second in range(1, 26):
        sink(Interval(Counters(), total, float(second), 1.0, 3.0, 2, 1_700_000_000.0, 1_700_000_000.0 + second))
    assert len(lines) == 2 and lines[0].lstrip().startswith("10.0 s") and lines[1].lstrip().startswith("20.0 s")
    assert "30 attempted, 25 successful, 3 failed (503: 2, timeout: 1), 2 in progress" in lines[0], lines[0]
    assert re.search(r"\(target 3/s\), p50 2(\.\d+)? ms p99 2(\.\d+)? ms$", lines[0]), lines[0]


def test_the_answering_side_shows_its_users_not_a_target_rate() -> None:
    """``load answer``: the callers set the pace, so the line and the view tell how many users
    are registered (and how many are not) instead of the registrations' rate."""
    from rich.console import Console

    from skinnysip.load.report import LiveView, ProgressLines

    total = Counters(attempted=2, registered=3)
    total.not_registered("carol: 403 Forbidden")
    lines: list[str] = []
    ProgressLines(lines.append, answering=True)(Interval(Counters(), total, 10.0, 1.0, 10.0, 2, 0.0, 10.0))
    assert "(3 users registered, 1 not)" in lines[0] and "target" not in lines[0], lines
    view = LiveView("skinnysip load answer", calls=True, answering=True)
    view(Interval(total, total, 10.0, 1.0, 10.0, 2, 0.0, 10.0))
    console = Console(record=True, width=100)
    console.print(view.render())
    text = console.export_text()
    assert "3 users registered, 1 not" in text and "target" not in text, text


def test_top_statuses_names_the_commonest_three() -> None:
    from skinnysip.load.report import top_statuses

    assert top_statuses({}) == ""
    assert top_statuses({"408": 1, "503": 4, "timeout": 2, "403": 3}) == "503: 4, 403: 3, timeout: 2, …"


def test_users_file_fields_for_sipp_field_keywords(tmp_path) -> None:
    """``[fieldN]`` in --to and --header values: field N (0-based) of the attempt's user's line."""
    from skinnysip.load.scenarios import substitute_fields

    path = tmp_path / "pairs.csv"
    path.write_text("SEQUENTIAL\n1001;pw1;1001;2001\n1002;pw2;1002;2002;extra\n")
    users, _ = read_users(path)
    assert [u.fields for u in users] == [("1001", "pw1", "1001", "2001"), ("1002", "pw2", "1002", "2002", "extra")]
    config = LoadConfig("call", "127.0.0.1", users=users, to="[field3]", headers=[("X-Pair", "[field0]->[field3]")])
    config.validate()
    assert [config.target_for(u) for u in users] == ["2001", "2002"]
    assert config.headers_for(users[1]) == [("X-Pair", "1002->2002")]
    assert substitute_fields("sip:bob@[::1]:5060", users[0]) == "sip:bob@[::1]:5060"  # IPv6 brackets stay
    # every line must have the fields named; without a users file there are none
    for to, headers, message in [("[field4]", [], "to: [field4] but the line of user '1001' has 4 field(s)"),
                                 ("bob", [("X-A", "[field9]")], "headers: X-A: [field9] but the line of user '1001'")]:
        with pytest.raises(ValueError, match=re.escape(message)):
            LoadConfig("call", "127.0.0.1", users=users, to=to, headers=headers).validate()
    with pytest.raises(ValueError, match=re.escape("to: [field1] needs a users file (--users)")):
        LoadConfig("message", "127.0.0.1", to="[field1]").validate()
    with pytest.raises(ValueError, match="to: 'sip:a b@"):  # a field that makes no URI is refused up front
        LoadConfig("message", "127.0.0.1", users=[User("x", fields=("x", "a b"))], to="[field1]").validate()


def test_malformed_messages_add_up_over_workers_and_keep_the_last() -> None:
    a, b, total = Counters(), Counters(), Counters()
    a.dropped(0, None)
    assert (a.malformed, a.last_malformed) == (0, None)
    a.dropped(3, "unparseable (200 OK: no CSeq header field)")
    b.dropped(2, "unparseable (not a SIP start line)")
    total.merge(a)
    assert (total.malformed, total.last_malformed) == (3, "unparseable (200 OK: no CSeq header field)")
    total.merge(Counters())  # a worker with none keeps the last one seen
    assert total.last_malformed == "unparseable (200 OK: no CSeq header field)"
    total.merge(b)
    assert (total.malformed, total.last_malformed) == (5, "unparseable (not a SIP start line)")


def test_watchdog_trips_as_sipp_counts_them_and_add_up_over_workers() -> None:
    from skinnysip.load.stats import WATCHDOG_INTERVAL, WATCHDOG_MAJOR, WATCHDOG_MINOR

    assert (WATCHDOG_INTERVAL, WATCHDOG_MINOR, WATCHDOG_MAJOR) == (0.4, 0.5, 3.0)  # SIPp's defaults
    a, b, total = Counters(), Counters(), Counters()
    for gap in (0.4, 0.45, 0.5, 0.51, 2.9, 3.0, 3.2):  # > 0.5 s apart: minor; > 3 s: major
        a.watchdog(gap, 0.0)
    assert (a.watchdog_minor, a.watchdog_major) == (3, 1)
    assert a.loop_lag_max == pytest.approx(2.8)
    b.watchdog(1.0, 0.0)
    total.merge(a)
    total.merge(b)
    assert (total.watchdog_minor, total.watchdog_major, total.loop_lag_max) == (4, 1, pytest.approx(2.8))
    assert Counters.from_dict(total.to_dict()).watchdog_minor == 4  # as workers hand them over


def test_the_call_ledger_tells_dead_calls_from_strangers_for_33_seconds_and_stays_bounded() -> None:
    """SIPp's -deadcall_wait (33 s): a message with the Call-ID of an attempt that ended at
    most that long ago is a DeadCallMsg, one with a Call-ID never ours (or forgotten) an
    OutOfCallMsg; an attempt still running is neither. At most ``limit`` ended Call-IDs are
    kept, the oldest forgotten first."""
    from skinnysip.load.scenarios import DEAD_CALL_WAIT, CallLedger

    assert DEAD_CALL_WAIT == 33.0
    ledger = CallLedger()
    ledger.start("a")
    assert ledger.classify("a", 0.0) == "live"
    ledger.end("a", 2.0)
    assert [ledger.classify("a", t) for t in (2.0, 35.0, 35.1)] == ["dead", "dead", "out-of-call"]
    assert ledger.classify("a", 3.0) == "out-of-call"  # forgotten for good, not revived by an earlier time
    assert ledger.classify("never", 0.0) == ledger.classify(None, 0.0) == "out-of-call"
    small = CallLedger(limit=3)
    for i in range(5):
        small.start(str(i))
        small.end(str(i), float(i))
    assert [small.classify(str(i), 5.0) for i in range(5)] == ["out-of-call"] * 2 + ["dead"] * 3
    assert len(small._ended) == 3
    small.start("3")  # a Call-ID used again is live, no longer dead
    assert small.classify("3", 5.0) == "live"


def test_dead_call_and_out_of_call_messages_add_up_over_workers_into_the_csv() -> None:
    a, b, total = Counters(), Counters(), Counters()
    a.dead_call_msgs, a.out_of_call_msgs, a.auto_answered = 2, 1, 7
    b.dead_call_msgs, b.out_of_call_msgs = 3, 4
    for worker in (a, b):
        total.merge(Counters.from_dict(worker.to_dict()))
    assert (total.dead_call_msgs, total.out_of_call_msgs, total.auto_answered) == (5, 5, 7)
    i = CSV_COLUMNS.index("OutOfCallMsgs(P)")
    assert CSV_COLUMNS[i:i + 9] == ["OutOfCallMsgs(P)", "OutOfCallMsgs(C)", "DeadCallMsgs(P)", "DeadCallMsgs(C)",
                                    "Retransmissions(P)", "Retransmissions(C)", "AutoAnswered(P)", "AutoAnswered(C)",
                                    "Warnings(P)"]  # SIPp's order


def test_live_view_shows_refreshes_of_a_registration_load_only() -> None:
    from rich.console import Console

    from skinnysip.load.report import LiveView

    def shown(counters: Counters) -> str:
        view = LiveView("skinnysip load register", calls=False)
        view(Interval(counters, counters, 1.0, 1.0, 5.0, 0, 1_700_000_000.0, 1_700_000_001.0))
        console = Console(record=True, width=100)
        console.print(view.render())
        return console.export_text()

    assert "refreshes" not in shown(Counters(attempted=3, successful=3))
    text = shown(Counters(attempted=3, successful=3, refreshes=6, refresh_challenges=2))
    assert re.search(r"refreshes\W+6\W+6", text) and re.search(r"challenged again\W+2\W+2", text), text


@pytest.mark.parametrize(("fields", "says"), [
    ({"scenario": "request"}, "needs a method"),
    ({"scenario": "request", "method": "INVITE"}, "makes a call"),
    ({"scenario": "request", "method": "REGISTER"}, "would leave a binding"),
    ({"scenario": "request", "method": "NOT IFY"}, "is not a SIP method"),
    ({"scenario": "request", "method": "NOTIFY", "content_type": "text/plain"}, "a Content-Type needs a body (--content-type)"),
    ({"scenario": "request", "method": "NOTIFY", "body": "x", "content_type": "text"}, "a media type"),
    ({"scenario": "request", "method": "NOTIFY", "body": "x" * 65537}, "at most 65536 octets"),
    ({"scenario": "options", "method": "NOTIFY"}, "only the request scenario"),
    ({"scenario": "message", "to": "bob", "body": "x"}, "only the request scenario"),
])
def test_the_request_scenarios_fields_are_checked(fields: dict, says: str) -> None:
    with pytest.raises(ValueError, match=re.escape(says)):
        LoadConfig(host="h", **fields).validate()


def test_a_request_scenario_that_is_fine() -> None:
    LoadConfig("request", "h", method="SUBSCRIBE", body="x", content_type="application/pidf+xml").validate()
    LoadConfig("request", "h", method="INFO").validate()
