"""SNS notifications with approval links (moto), a Bedrock Agent as a role and a Bedrock
Knowledge Base as the knowledge pattern's read side (botocore's Stubber)."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from cadenza import Context, workflow
from cadenza.aws import BedrockAgent, BedrockKnowledgeBase, SnsNotifier, session_id
from cadenza.errors import ModelNotFound, ModelThrottled, WorkflowDefinitionError
from cadenza.patterns import KnowledgeBase, Notification
from cadenza.service._links_signer import ApprovalLinks
from cadenza.testing import ScriptedModel, TestEnvironment
from tests._aws import REGION

pytestmark = pytest.mark.timeout(60)


def _runtime_client() -> Any:
    return boto3.client(
        "bedrock-agent-runtime",
        region_name="us-east-1",
        aws_access_key_id="x",
        aws_secret_access_key="x",
    )


def _streamed(client: Any) -> Any:
    """botocore's Stubber checks an InvokeAgent completion as one event; the service
    streams many. After the stubbed call, split the one event's bytes into a chunk per
    word, as the code sees them from botocore's EventStream."""

    def split(parsed: dict[str, Any], **_: Any) -> None:
        completion = parsed.get("completion")
        if isinstance(completion, dict) and "chunk" in completion:
            words = completion["chunk"]["bytes"].split(b" ")
            last = len(words) - 1
            parsed["completion"] = [
                {"chunk": {"bytes": w + (b" " if n < last else b"")}} for n, w in enumerate(words)
            ]

    client.meta.events.register("after-call.bedrock-agent-runtime.InvokeAgent", split)
    return client


async def test_sns_sends_each_reviewer_their_own_link(aws_endpoint: str) -> None:
    sns = boto3.client("sns", region_name=REGION, endpoint_url=aws_endpoint)
    sqs = boto3.client("sqs", region_name=REGION, endpoint_url=aws_endpoint)
    topic = sns.create_topic(Name="approvals")["TopicArn"]
    inboxes = {}
    for who in ("ed@example.com", "ann@example.com"):
        url = sqs.create_queue(QueueName=f"inbox-{who.split('@')[0]}")["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
        sns.subscribe(
            TopicArn=topic,
            Protocol="sqs",
            Endpoint=arn,
            Attributes={
                "FilterPolicy": json.dumps({"reviewer": [who]}),
                "RawMessageDelivery": "true",
            },
        )
        inboxes[who] = url
    env = TestEnvironment()
    async with env:
        links = ApprovalLinks.for_engine(env.engine, base_url="https://approve.example.com")
        expires = env.engine.clock.now() + timedelta(days=1)
        token = env.engine.tokens.issue("cb-1", "r-1", "op", expires)
        notifier = SnsNotifier(
            topic,
            reviewers=["ed@example.com", "ann@example.com"],
            links=links,
            region=REGION,
            endpoint_url=aws_endpoint,
        )
        receipt = await notifier.send(
            Notification(
                "approval_requested", "Report: bikes", "r-1", "research-report", token=token
            )
        )
    assert receipt is not None and receipt["reviewers"] == ["ed@example.com", "ann@example.com"]
    seen = {}
    for who, url in inboxes.items():
        [message] = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)["Messages"]
        seen[who] = message["Body"]
        assert "https://approve.example.com/approve/" in message["Body"]
        assert f"This link is for {who} alone" in message["Body"]
    assert seen["ed@example.com"] != seen["ann@example.com"]  # a link each


async def test_an_escalation_without_a_token_is_one_message(aws_endpoint: str) -> None:
    sns = boto3.client("sns", region_name=REGION, endpoint_url=aws_endpoint)
    sqs = boto3.client("sqs", region_name=REGION, endpoint_url=aws_endpoint)
    topic = sns.create_topic(Name="escalations")["TopicArn"]
    url = sqs.create_queue(QueueName="ops")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    sns.subscribe(
        TopicArn=topic, Protocol="sqs", Endpoint=arn, Attributes={"RawMessageDelivery": "true"}
    )
    notifier = SnsNotifier(topic, reviewers=["ops"], region=REGION, endpoint_url=aws_endpoint)
    await notifier.send(
        Notification("saga_compensation_failed", "Refund failed", "r-9", "trip", body={"n": 1})
    )
    [message] = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)["Messages"]
    assert "saga_compensation_failed in run r-9" in message["Body"]


@workflow(name="aws-agent-role", version="1")
async def ask_agent(ctx: Context, question: str) -> str:
    return str(await AGENT(ctx, question))


AGENT = BedrockAgent(
    "AGENT12345", "ALIAS12345", name="researcher", client=_streamed(_runtime_client())
)


async def test_a_bedrock_agent_answers_once_in_the_steps_session() -> None:
    stub = Stubber(AGENT.client)
    async with TestEnvironment() as env:
        run_id = "r-agent"
        expected = {
            "agentId": "AGENT12345",
            "agentAliasId": "ALIAS12345",
            "sessionId": session_id(f"{run_id}/1"),
            "inputText": "Which stations are busiest?",
        }
        stub.add_client_error(
            "invoke_agent", "ThrottlingException", "slow down", expected_params=expected
        )
        stub.add_response(
            "invoke_agent",
            {
                "completion": {"chunk": {"bytes": b"Harbour Square."}},
                "contentType": "text/plain",
                "sessionId": expected["sessionId"],
            },
            expected,
        )
        with stub:
            run = await env.run(ask_agent, "Which stations are busiest?", run_id=run_id, linger=5)
            assert await env.result(run) == "Harbour Square."
            stub.assert_no_pending_responses()  # the retry used the same session
    assert session_id("a/1") == session_id("a/1") != session_id("a/2")


def test_agent_errors_are_model_errors() -> None:
    agent = BedrockAgent("A1", "B1", client=_runtime_client())
    stub = Stubber(agent.client)
    stub.add_client_error("invoke_agent", "ResourceNotFoundException", "no such agent")
    stub.add_client_error("invoke_agent", "ThrottlingException", "slow down")
    with stub:
        with pytest.raises(ModelNotFound, match="check the ids"):
            agent._invoke("cadenza-s", "hi")
        with pytest.raises(ModelThrottled):
            agent._invoke("cadenza-s", "hi")


async def test_a_bedrock_knowledge_base_is_the_read_side() -> None:
    retriever = BedrockKnowledgeBase("KB12345678", client=_runtime_client())
    stub = Stubber(retriever.client)
    stub.add_response(
        "retrieve",
        {
            "retrievalResults": [
                {
                    "content": {"text": "Ridership grew 14% in Q1."},
                    "location": {"type": "S3", "s3Location": {"uri": "s3://kb/q1.md"}},
                    "score": 0.82,
                    "metadata": {"x-amz-bedrock-kb-chunk-id": "c-1"},
                },
                {
                    "content": {"text": "The harbour lane cut collisions."},
                    "location": {"type": "WEB", "webLocation": {"url": "https://x/safety"}},
                    "score": 0.4,
                },
            ]
        },
        {
            "knowledgeBaseId": "KB12345678",
            "retrievalQuery": {"text": "How is ridership?"},
            "retrievalConfiguration": {"vectorSearchConfiguration": {"numberOfResults": 4}},
        },
    )
    model = ScriptedModel(name="scripted:kb", default="Ridership grew 14% [1].")
    kb = KnowledgeBase("bikes", model=model, retriever=retriever)

    @workflow(name="aws-kb-answer", version="1")
    async def answer(ctx: Context, question: str) -> dict[str, Any]:
        found = await kb.answer(ctx, question)
        return {
            "text": found.text,
            "cited": [c.document_id for c in found.citations],
            "sources": [p.source for p in found.passages],
        }

    with stub:
        async with TestEnvironment() as env:
            run = await env.run(answer, "How is ridership?")
            result = await env.result(run)
        stub.assert_no_pending_responses()
    assert result == {
        "text": "Ridership grew 14% [1].",
        "cited": ["s3://kb/q1.md"],
        "sources": ["s3://kb/q1.md", "https://x/safety"],
    }

    @workflow(name="aws-kb-ingest", version="1")
    async def ingest(ctx: Context, text: str) -> int:
        return len(await kb.ingest(ctx, [text]))

    async with TestEnvironment() as env:
        run = await env.run(ingest, "some text")
        assert run.error is not None and "WorkflowDefinitionError" in run.error.type
    with pytest.raises(WorkflowDefinitionError):
        KnowledgeBase("x", retriever=object())  # type: ignore[arg-type]


def test_bedrock_is_the_default_model(monkeypatch: pytest.MonkeyPatch) -> None:
    from cadenza.aws import default_model
    from cadenza.models import infer_model

    monkeypatch.delenv("CADENZA_BEDROCK_MODEL", raising=False)
    assert default_model() == "bedrock:us.amazon.nova-lite-v1:0"
    monkeypatch.setenv("CADENZA_BEDROCK_MODEL", "eu.amazon.nova-pro-v1:0")
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    model = infer_model(default_model())
    assert model.name == "bedrock:eu.amazon.nova-pro-v1:0"
