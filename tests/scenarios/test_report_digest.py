"""report-digest: ten branches, at most four at a time; a failing branch is reported and the
digest goes on; themes are counted across the reports; contradictions come back."""

from __future__ import annotations

from typing import Any

from cadenza import RunStatus
from cadenza.agents import register_model
from cadenza.errors import ModelResponseError
from cadenza.examples.report_digest import report_digest
from cadenza.models import ModelRequest
from cadenza.testing import TestEnvironment
from cadenza.testing.scripted_model import ScriptedModel

# What each report is about, by a phrase from its title.
THEMES = {
    "Q1 field report": ["ridership", "dock availability"],
    "Q2 field report": ["ridership", "dock availability", "safety"],
    "safety review": ["safety"],
    "finances": ["finances", "e-bikes"],
    "access and equity": ["equity"],
    "Q3 field report": ["ridership", "dock availability"],
    "maintenance and fleet health": ["maintenance", "e-bikes"],
    "environmental impact": ["environment"],
    "Q4 field report": ["ridership", "safety", "dock availability"],
    "plans for next year": ["expansion"],
}
DOCKS = {
    "topic": "dock availability",
    "reports": ["02-ridership-q2", "06-ridership-q3", "09-ridership-q4"],
    "detail": "Q2 says empty docks hardly matter; Q3 logs fewer abandoned rentals; Q4 calls"
    " it solved while the forum still complains.",
}


class Analyst(ScriptedModel):
    """Answers each report with its themes and a finding, counting calls in flight."""

    def __init__(self, *, fail_on: str | None = None, disputes: Any = None) -> None:
        super().__init__(name="scripted:analyst", default=self.extract, delay=0.01)
        self.in_flight = self.peak = 0
        if fail_on:
            self.on(fail_on, ModelResponseError("the reply was cut off"))
        self.on("contradict each other", disputes or {"contradictions": [DOCKS]})

    async def request(self, req: ModelRequest) -> Any:
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            return await super().request(req)
        finally:
            self.in_flight -= 1

    def extract(self, req: ModelRequest) -> dict[str, Any]:
        report = req.messages[-1].content
        title = next(t for t in THEMES if t in report.splitlines()[0])
        return {"themes": THEMES[title], "findings": [f"The {title} has figures worth noting."]}


async def digest(env: TestEnvironment, analyst: Analyst) -> dict[str, Any]:
    register_model("scripted:analyst", analyst)
    run = await env.run(report_digest, {"model": "scripted:analyst"})
    assert run.status == RunStatus.SUCCEEDED, run.error
    result: dict[str, Any] = await env.result(run)
    return result


def counts(result: dict[str, Any]) -> dict[str, int]:
    return {t["theme"]: t["reports"] for t in result["themes"]}


async def test_ten_branches_merge_their_themes_and_list_contradictions(
    env: TestEnvironment,
) -> None:
    analyst = Analyst()
    result = await digest(env, analyst)
    assert result["reports"] == result["succeeded"] == 10 and result["failed"] == []
    assert 1 < analyst.peak <= 4  # in parallel, never more than four at a time
    assert counts(result) == {
        "ridership": 4,
        "dock availability": 4,
        "safety": 3,
        "e-bikes": 2,
        "finances": 1,
        "equity": 1,
        "maintenance": 1,
        "environment": 1,
        "expansion": 1,
    }
    assert result["themes"][0]["sources"] == [
        "01-ridership-q1",
        "02-ridership-q2",
        "06-ridership-q3",
        "09-ridership-q4",
    ]
    assert result["contradictions"] == [DOCKS]
    # The synthesis read every report's findings, by name, and could only name those.
    synthesis = analyst.last_request
    assert synthesis.messages[-1].content.count("has figures worth noting") == 10
    assert "[08-environment]" in synthesis.messages[-1].content
    schema = synthesis.output_schema
    assert schema is not None
    item = schema["properties"]["contradictions"]["items"]["properties"]["reports"]["items"]
    assert len(item["enum"]) == 10


async def test_a_failing_branch_is_reported_without_sinking_the_digest(
    env: TestEnvironment,
) -> None:
    analyst = Analyst(fail_on="410 tonnes of CO2")  # the environmental report
    result = await digest(env, analyst)
    assert result["succeeded"] == 9
    assert result["failed"] == [
        {"report": "08-environment", "error": "ModelResponseError: the reply was cut off"}
    ]
    assert "environment" not in counts(result) and counts(result)["ridership"] == 4
    assert "08-environment" not in result["findings"]
    assert "[08-environment]" not in analyst.last_request.messages[-1].content
    assert result["contradictions"] == [DOCKS]


async def test_more_than_half_the_branches_failing_fails_the_run(env: TestEnvironment) -> None:
    analyst = Analyst(fail_on="Harbour City bike share")  # every report
    register_model("scripted:analyst", analyst)
    run = await env.run(report_digest, {"model": "scripted:analyst"})
    assert run.status == RunStatus.FAILED
    assert run.error is not None and run.error.type == "PatternError"
    assert "branches succeeded" in run.error.message and "cut off" in run.error.message


async def test_contradictions_the_model_cannot_shape_leave_the_digest_standing(
    env: TestEnvironment,
) -> None:
    # A small model that never fills the contradictions schema: every repair fails too.
    analyst = Analyst(disputes={"topics": "the docks"})
    analyst.on("did not match the required JSON schema", {"topics": "the docks, again"})
    result = await digest(env, analyst)
    assert result["succeeded"] == 10 and counts(result)["ridership"] == 4
    assert result["contradictions"] == []
    assert "'contradictions' is a required property" in result["contradictions_unresolved"]
