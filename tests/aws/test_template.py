"""``cadenza aws template``: a SAM template that cfn-lint accepts, a table the DynamoDB
store runs on, and a role per function that allows exactly what the function does."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from cadenza.cli import cli

pytestmark = pytest.mark.timeout(180)

REPORT = "cadenza.examples.research_report:research_report"
ENGINE = {
    "dynamodb:BatchGetItem",
    "dynamodb:BatchWriteItem",
    "dynamodb:ConditionCheckItem",
    "dynamodb:DeleteItem",
    "dynamodb:DescribeTable",
    "dynamodb:GetItem",
    "dynamodb:PutItem",
    "dynamodb:Query",
    "dynamodb:UpdateItem",
    "s3:GetObject",
    "s3:PutObject",
    "s3:ListBucket",
    "sqs:SendMessage",
    "logs:CreateLogStream",
    "logs:PutLogEvents",
}
CONSUME = {
    "sqs:ChangeMessageVisibility",
    "sqs:DeleteMessage",
    "sqs:GetQueueAttributes",
    "sqs:ReceiveMessage",
}
BEDROCK = {"bedrock:InvokeModel", "bedrock:InvokeModelWithResponseStream"}


def _write(tmp_path: Path, *args: str) -> dict[str, Any]:
    rules = tmp_path / "rules.json"
    rules.write_text(
        json.dumps(
            [
                {
                    "name": "reports",
                    "pattern": {"detail-type": ["ReportRequested"], "run_id": [{"exists": False}]},
                    "target": "start_workflow",
                    "params": {"workflow": "research-report", "module": REPORT},
                }
            ]
        )
    )
    out = tmp_path / "template.yaml"
    result = CliRunner().invoke(
        cli, ["aws", "template", "-w", REPORT, "--rules", str(rules), "-o", str(out), *args]
    )
    assert result.exit_code == 0, result.output
    data: dict[str, Any] = json.loads(out.read_text())
    return data


def _lint(path: Path) -> list[str]:
    """cfn-lint's findings (errors, warnings and informational) on the template."""
    from cfnlint.api import lint

    return [str(match) for match in lint(path.read_text(), regions=["us-east-1", "eu-west-1"])]


def _policy(template: dict[str, Any], function: str) -> list[dict[str, Any]]:
    role = template["Resources"][f"{function}Role"]["Properties"]
    [policy] = role["Policies"]
    statements: list[dict[str, Any]] = policy["PolicyDocument"]["Statement"]
    return statements


def _actions(template: dict[str, Any], function: str) -> set[str]:
    return {a for s in _policy(template, function) for a in s["Action"]}


def _refs(value: Any) -> set[str]:
    """The template resources a policy resource refers to."""
    if isinstance(value, dict):
        if "Ref" in value:
            return {value["Ref"]}
        if "Fn::GetAtt" in value:
            return {value["Fn::GetAtt"][0]}
        if "Fn::Sub" in value:
            text = value["Fn::Sub"]
            return {part.split("}")[0].split(".")[0] for part in text.split("${")[1:]}
    return set()


def test_the_template_passes_cfn_lint(tmp_path: Path) -> None:
    _write(tmp_path, "--sns")
    findings = _lint(tmp_path / "template.yaml")
    assert findings == []
    # cfn-lint does read it: a broken function is reported.
    template = json.loads((tmp_path / "template.yaml").read_text())
    template["Resources"]["WorkQueue"]["Properties"]["VisibilityTimeout"] = "often"
    statements = template["Resources"]["ApiRole"]["Properties"]["Policies"][0]["PolicyDocument"]
    statements["Statement"][1]["Resource"] = [{"Fn::GetAtt": ["NoSuchTable", "Arn"]}]
    broken = tmp_path / "broken.yaml"
    broken.write_text(json.dumps(template))
    findings = _lint(broken)
    assert any("NoSuchTable" in f for f in findings) and any("often" in f for f in findings)


def test_each_function_may_do_exactly_what_it_does(tmp_path: Path) -> None:
    template = _write(tmp_path)
    bus = {"events:PutEvents"}
    assert _actions(template, "Worker") == ENGINE | CONSUME | bus | BEDROCK
    assert _actions(template, "Sweeper") == ENGINE | bus
    assert _actions(template, "Rules") == ENGINE | CONSUME
    assert _actions(template, "Waiters") == ENGINE | CONSUME
    assert _actions(template, "Api") == ENGINE | bus
    assert "NotificationTopic" not in template["Resources"]  # no --sns: no topic, no Publish
    with_sns = _write(tmp_path, "--sns")
    assert _actions(with_sns, "Worker") - _actions(template, "Worker") == {"sns:Publish"}
    for function in ("Sweeper", "Rules", "Waiters", "Api"):
        assert "sns:Publish" not in _actions(with_sns, function)


def test_every_statement_is_scoped_to_the_stack_resources(tmp_path: Path) -> None:
    template = _write(tmp_path, "--sns", "--knowledge-base", "KB1234567")
    owned = {
        "RunTable": "dynamodb:",
        "ArtifactBucket": "s3:",
        "EventBus": "events:",
        "NotificationTopic": "sns:",
    }
    for function in ("Worker", "Sweeper", "Rules", "Waiters", "Api"):
        for statement in _policy(template, function):
            assert statement["Effect"] == "Allow"
            assert all("*" not in action for action in statement["Action"])
            assert statement["Resource"] and "*" not in statement["Resource"]
            refs = set().union(*(_refs(r) for r in statement["Resource"]))
            service = statement["Action"][0].split(":")[0] + ":"
            if service == "sqs:":
                queues = {"WorkQueue"} if "sqs:SendMessage" in statement["Action"] else None
                queues = queues or {f"{function.replace('Worker', 'Work')}Queue"}
                assert refs == queues, (function, statement)
            elif service == "logs:":
                assert refs == {f"{function}LogGroup"}
            elif service == "bedrock:":
                for resource in statement["Resource"]:
                    text = resource["Fn::Sub"]
                    assert (
                        ("foundation-model/amazon.nova-lite-v1:0" in text)
                        or ("inference-profile/us.amazon.nova-lite-v1:0" in text)
                        or text.endswith("knowledge-base/KB1234567")
                    ), text
            else:
                [name] = [n for n, s in owned.items() if s == service]
                assert refs == {name}, (function, statement)
    # The consumers of the queues are exactly their functions.
    for function, queue in (("Worker", "Work"), ("Rules", "Rules"), ("Waiters", "Waiters")):
        events = template["Resources"][f"{function}Function"]["Properties"]["Events"]
        [event] = events.values()
        assert event["Properties"]["Queue"] == {"Fn::GetAtt": [f"{queue}Queue", "Arn"]}
        assert event["Properties"]["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
        dlq = template["Resources"][f"{queue}Queue"]["Properties"]["RedrivePolicy"]
        assert dlq["deadLetterTargetArn"] == {"Fn::GetAtt": [f"{queue}DeadLetterQueue", "Arn"]}


def test_the_bus_rules_and_the_sweeper(tmp_path: Path) -> None:
    template = _write(tmp_path)
    resources = template["Resources"]
    [rule] = [r for n, r in resources.items() if n.startswith("BusRule")]
    pattern = rule["Properties"]["EventPattern"]
    assert pattern == {
        "detail-type": ["ReportRequested"],
        "detail": {"_cadenza": {"run_id": [{"exists": False}], "tenant": ["default"]}},
    }
    assert rule["Properties"]["Targets"][0]["Arn"] == {"Fn::GetAtt": ["RulesQueue", "Arn"]}
    sweeper = resources["SweeperFunction"]["Properties"]["Events"]["Every"]
    assert sweeper == {"Type": "Schedule", "Properties": {"Schedule": "rate(1 minute)"}}
    env = resources["WorkerFunction"]["Properties"]["Environment"]["Variables"]
    assert env["CADENZA_WORKFLOWS"] == REPORT
    assert json.loads(env["CADENZA_RULES"])[0]["name"] == "reports"
    assert resources["WorkQueue"]["Properties"]["VisibilityTimeout"] == 6 * 900


async def test_the_run_store_works_on_the_table_the_template_defines(
    tmp_path: Path, aws_endpoint: str
) -> None:
    import boto3

    from cadenza import Context, workflow
    from cadenza.adapters.dynamodb import DynamoDbRunStore
    from cadenza.engine.engine import Engine
    from cadenza.engine.worker import drive
    from tests._aws import REGION

    template = _write(tmp_path)
    table = dict(template["Resources"]["RunTable"]["Properties"])
    table.pop("PointInTimeRecoverySpecification")
    table.pop("SSESpecification")
    name = f"tpl-{tmp_path.name[-12:]}".replace("_", "-")
    client = boto3.client("dynamodb", region_name=REGION, endpoint_url=aws_endpoint)
    client.create_table(TableName=name, **table)

    @workflow(name="aws-template-check", version="1")
    async def check(ctx: Context, n: int) -> int:
        async def double(x: int) -> int:
            return 2 * x

        return await ctx.step(double, n)

    store = DynamoDbRunStore(name, region=REGION, endpoint_url=aws_endpoint)
    await store.open()
    engine = Engine(store, secret=b"k" * 32)
    run = await engine.start(check, 21)
    assert (await drive(engine, run.run_id)).status == "SUCCEEDED"
    assert await engine.result(run.run_id) == 42
    await store.close()


def test_deploy_without_sam_says_what_to_install(tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    result = CliRunner().invoke(cli, ["aws", "deploy", "-t", str(tmp_path / "t.yaml")])
    assert result.exit_code == 2
    assert "SAM CLI ('sam') is not installed" in result.output


def test_deploy_runs_sam_build_then_deploy(tmp_path: Path, monkeypatch: Any) -> None:
    log = tmp_path / "calls"
    sam = tmp_path / "sam"
    sam.write_text(f'#!/bin/sh\necho "$@" >> {log}\n')
    sam.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    (tmp_path / "t.yaml").write_text("{}")
    result = CliRunner().invoke(
        cli, ["aws", "deploy", "-t", str(tmp_path / "t.yaml"), "--stack-name", "s", "--", "--x"]
    )
    assert result.exit_code == 0, result.output
    build, deploy = log.read_text().splitlines()
    assert build.startswith("build --template-file")
    assert (
        deploy.split()[:1] == ["deploy"] and "--stack-name s" in deploy and deploy.endswith("--x")
    )


def test_template_refuses_unknown_workflows_and_bad_rules(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["aws", "template", "-w", "no.such.module:wf"])
    assert result.exit_code != 0
    rules = tmp_path / "r.json"
    rules.write_text(json.dumps([{"name": "x", "pattern": {"a": 1}, "target": "start_workflow"}]))
    result = CliRunner().invoke(
        cli, ["aws", "template", "-w", REPORT, "--rules", str(rules), "-o", str(tmp_path / "o")]
    )
    assert result.exit_code == 2 and "error" in result.output
