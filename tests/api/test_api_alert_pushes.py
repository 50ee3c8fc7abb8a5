"""The API side of pushes: an alert's deliveries, and the new metrics."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from api_feed import MakeClient, enrolment, record, vitals
from test_api_operations import samples

pytest_plugins = ("api_fixtures",)

SEVERE = (
    vitals(1, 8, temperature_c=39.2, sbp_mmhg=100, dbp_mmhg=60),
    vitals(2, 10, temperature_c=39.4, sbp_mmhg=78, dbp_mmhg=40),
    record("vasopressor_start", 3, started_at=vitals(9, 10)["observed_at"],
           drug="norepinephrine", dose=0.1, unit="ug/kg/min"),
)  # fmt: skip


@pytest.fixture
def hook_url() -> Iterator[str]:
    """A receiver that answers 500 (so the push stays pending, to retry)."""

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(500)
            self.end_headers()

        def log_message(self, *_: object) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook"
    server.shutdown()
    server.server_close()


def test_an_alert_shows_its_deliveries_and_metrics_count_them(
    make_client: MakeClient, hook_url: str
) -> None:
    """A severe alert pushed once (500: pending), visible on the alert and /metrics."""
    client = make_client(webhook_urls=[hook_url], webhook_secret="test-only")
    client.post("/v1/records", json=enrolment())
    for item in SEVERE:
        assert client.post("/v1/records", json=item).status_code == 201
    listed = client.get("/v1/alerts", params={"kind": "severe_crs"}).json()
    (severe,) = listed["items"]
    reply = client.get(f"/v1/alerts/{severe['id']}")
    assert reply.status_code == 200
    detail = reply.json()
    assert detail["kind"] == "severe_crs"
    (delivery,) = detail["deliveries"]
    assert hook_url.startswith(delivery["target"] + "/")  # no path shown
    assert delivery["target"].startswith("http://127.0.0.1:")
    assert (delivery["status"], delivery["attempts"]) == ("pending", 1)
    assert (delivery["last_status_code"], delivery["last_error"]) == (500, "HTTP 500")
    assert delivery["next_attempt_at"] is not None
    onset = client.get("/v1/alerts", params={"kind": "crs_onset"}).json()["items"]
    assert client.get(f"/v1/alerts/{onset[0]['id']}").json()["deliveries"] == []
    found = samples(client.get("/metrics").text)
    assert found[("crsmon_webhook_deliveries", (("status", "pending"),))] == 1
    assert found[("crsmon_webhook_deliveries", (("status", "delivered"),))] == 0
    assert found[("crsmon_records_graded_recently", ())] == 7  # 2 x 3 vitals + 1
    for stat in ("mean", "p95", "max"):
        assert found[("crsmon_grading_lag_seconds", (("stat", stat),))] >= 0


def test_an_unknown_alert_is_404(make_client: MakeClient) -> None:
    client = make_client()
    reply = client.get("/v1/alerts/999999")
    assert reply.status_code == 404
    assert reply.json() == {
        "detail": [{"field": "alert_id", "reason": "no such alert"}]
    }


def test_no_grading_yet_reports_zero_lag(make_client: MakeClient) -> None:
    found = samples(make_client().get("/metrics").text)
    assert found[("crsmon_records_graded_recently", ())] == 0
    assert found[("crsmon_grading_lag_seconds", (("stat", "max"),))] == 0
