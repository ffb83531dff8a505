"""The SAM (CloudFormation) template of the serverless shape, for a set of workflows.

One stack: the DynamoDB table (the run store's key schema and indexes, taken from the
store itself so they cannot drift), the S3 bucket, the EventBridge bus with one rule per
cadenza rule plus the waiters rule, three SQS queues each with a dead-letter queue, the
Lambda functions with their triggers, the sweeper's schedule, the deployment secret and,
when asked for, the SNS topic.

Every function gets a role of its own whose statements name exact actions on exact
resources: what its code calls and nothing more. The functions share what every engine
does (read and write the table and the artifacts, enqueue runs), and differ in the rest:
only the worker may call Bedrock, only functions that relay the outbox may put events on
the bus, only the worker may publish to the topic, and only when the workflows notify.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from cadenza.aws._bedrock_agents import DEFAULT_MODEL
from cadenza.aws._eventbridge import WAITERS_PATTERN, bus_pattern, rule_name
from cadenza.aws._rules import rule_to_json
from cadenza.errors import ConfigurationError
from cadenza.ports.run_store import Rule

#: What the run store calls on its table (``cadenza.adapters.dynamodb``); a transaction
#: needs the action of each item it holds, a ConditionCheck included.
TABLE_ACTIONS: Final = (
    "dynamodb:BatchGetItem",
    "dynamodb:BatchWriteItem",
    "dynamodb:ConditionCheckItem",
    "dynamodb:DeleteItem",
    "dynamodb:DescribeTable",
    "dynamodb:GetItem",
    "dynamodb:PutItem",
    "dynamodb:Query",
    "dynamodb:UpdateItem",
)
#: The S3 artifact store: content-addressed writes check for the object first, and a
#: missing object answers 404 (not 403) only with ListBucket.
OBJECT_ACTIONS: Final = ("s3:GetObject", "s3:PutObject")
LIST_ACTIONS: Final = ("s3:ListBucket",)
CONSUME_ACTIONS: Final = (
    "sqs:ChangeMessageVisibility",
    "sqs:DeleteMessage",
    "sqs:GetQueueAttributes",
    "sqs:ReceiveMessage",
)
ENQUEUE_ACTIONS: Final = ("sqs:SendMessage",)
LOG_ACTIONS: Final = ("logs:CreateLogStream", "logs:PutLogEvents")
BEDROCK_ACTIONS: Final = ("bedrock:InvokeModel", "bedrock:InvokeModelWithResponseStream")
PREFIX: Final = "cadenza"  # the artifacts' key prefix in the bucket

#: Seconds each function may run. The worker takes Lambda's maximum; activations stop
#: short of it by themselves. SQS hides a message six times the function's timeout, as
#: AWS advises for event-source mappings.
TIMEOUTS: Final = {"Worker": 900, "Sweeper": 300, "Rules": 120, "Waiters": 120, "Api": 29}


@dataclass(frozen=True)
class TemplateOptions:
    """What the template is generated for."""

    workflows: Sequence[str]  # MODULE:WORKFLOW references, imported by every function
    rules: Sequence[Rule] = ()
    sns: bool = False  # the workflows notify through SNS: a topic, and Publish for the worker
    models: Sequence[str] = (DEFAULT_MODEL,)  # Bedrock model / inference profile ids
    agents: Sequence[str] = ()  # Bedrock agent alias ARNs the workflows invoke
    knowledge_bases: Sequence[str] = ()  # Bedrock knowledge base ids the workflows read
    code_uri: str = "."
    runtime: str = "python3.12"
    memory: int = 1024
    sweep_every: str = "rate(1 minute)"
    extra_env: dict[str, str] = field(default_factory=dict)


def _sub(text: str) -> dict[str, str]:
    return {"Fn::Sub": text}


def _arn(resource: str) -> dict[str, list[str]]:
    return {"Fn::GetAtt": [resource, "Arn"]}


def _statement(actions: Sequence[str], resources: Sequence[Any], **extra: Any) -> dict[str, Any]:
    return {"Effect": "Allow", "Action": sorted(actions), "Resource": list(resources), **extra}


def _queue(name: str, timeout: int) -> dict[str, Any]:
    return {
        f"{name}Queue": {
            "Type": "AWS::SQS::Queue",
            "Properties": {
                "VisibilityTimeout": timeout * 6,
                "MessageRetentionPeriod": 1_209_600,
                "SqsManagedSseEnabled": True,
                "RedrivePolicy": {
                    "deadLetterTargetArn": _arn(f"{name}DeadLetterQueue"),
                    "maxReceiveCount": 10,
                },
            },
        },
        f"{name}DeadLetterQueue": {
            "Type": "AWS::SQS::Queue",
            "Properties": {"MessageRetentionPeriod": 1_209_600, "SqsManagedSseEnabled": True},
        },
    }


def _table() -> dict[str, Any]:
    from cadenza.adapters.dynamodb._table import PROJECTED

    keys = ("pk", "sk", "g1pk", "g1sk", "g2pk", "g2sk")
    return {
        "Type": "AWS::DynamoDB::Table",
        "DeletionPolicy": "Retain",
        "UpdateReplacePolicy": "Retain",
        "Properties": {
            "BillingMode": "PAY_PER_REQUEST",
            "AttributeDefinitions": [{"AttributeName": k, "AttributeType": "S"} for k in keys],
            "KeySchema": [
                {"AttributeName": "pk", "KeyType": "HASH"},
                {"AttributeName": "sk", "KeyType": "RANGE"},
            ],
            "GlobalSecondaryIndexes": [
                {
                    "IndexName": f"gsi{n}",
                    "KeySchema": [
                        {"AttributeName": f"g{n}pk", "KeyType": "HASH"},
                        {"AttributeName": f"g{n}sk", "KeyType": "RANGE"},
                    ],
                    "Projection": {
                        "ProjectionType": "INCLUDE",
                        "NonKeyAttributes": list(PROJECTED[n]),
                    },
                }
                for n in (1, 2)
            ],
            "PointInTimeRecoverySpecification": {"PointInTimeRecoveryEnabled": True},
            "SSESpecification": {"SSEEnabled": True},
        },
    }


def _bucket() -> dict[str, Any]:
    return {
        "Type": "AWS::S3::Bucket",
        "DeletionPolicy": "Retain",
        "UpdateReplacePolicy": "Retain",
        "Properties": {
            "BucketEncryption": {
                "ServerSideEncryptionConfiguration": [
                    {"ServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}
                ]
            },
            "PublicAccessBlockConfiguration": {
                "BlockPublicAcls": True,
                "BlockPublicPolicy": True,
                "IgnorePublicAcls": True,
                "RestrictPublicBuckets": True,
            },
        },
    }


def _engine_statements() -> list[dict[str, Any]]:
    """What every function's engine does: the table, the artifacts, the work queue."""
    return [
        _statement(TABLE_ACTIONS, [_arn("RunTable"), _sub("${RunTable.Arn}/index/*")]),
        _statement(OBJECT_ACTIONS, [_sub(f"${{ArtifactBucket.Arn}}/{PREFIX}/*")]),
        _statement(
            LIST_ACTIONS,
            [_arn("ArtifactBucket")],
            Condition={"StringLike": {"s3:prefix": [f"{PREFIX}/*"]}},
        ),
        _statement(ENQUEUE_ACTIONS, [_arn("WorkQueue")]),
    ]


def _bedrock_statements(options: TemplateOptions) -> list[dict[str, Any]]:
    statements = []
    models: list[Any] = []
    for model in options.models:
        base = (
            model.split(".", 1)[1] if model[:3] in ("us.", "eu.") or model[:5] == "apac." else model
        )
        models.append(_sub(f"arn:${{AWS::Partition}}:bedrock:*::foundation-model/{base}"))
        if base != model:  # a cross-region inference profile, and the models it routes to
            models.append(
                _sub(
                    "arn:${AWS::Partition}:bedrock:${AWS::Region}:${AWS::AccountId}:"
                    f"inference-profile/{model}"
                )
            )
    if models:
        statements.append(_statement(BEDROCK_ACTIONS, models))
    if options.agents:
        statements.append(_statement(("bedrock:InvokeAgent",), list(options.agents)))
    if options.knowledge_bases:
        statements.append(
            _statement(
                ("bedrock:Retrieve",),
                [
                    _sub(
                        "arn:${AWS::Partition}:bedrock:${AWS::Region}:${AWS::AccountId}:"
                        f"knowledge-base/{kb}"
                    )
                    for kb in options.knowledge_bases
                ],
            )
        )
    return statements


def _role(function: str, statements: list[dict[str, Any]]) -> dict[str, Any]:
    logs = _statement(
        LOG_ACTIONS, [_sub(f"${{{function}LogGroup.Arn}}")]
    )  # the function's own log group only
    return {
        "Type": "AWS::IAM::Role",
        "Properties": {
            "AssumeRolePolicyDocument": {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Effect": "Allow",
                        "Principal": {"Service": "lambda.amazonaws.com"},
                        "Action": "sts:AssumeRole",
                    }
                ],
            },
            "Policies": [
                {
                    "PolicyName": f"cadenza-{function.lower()}",
                    "PolicyDocument": {
                        "Version": "2012-10-17",
                        "Statement": [logs, *statements],
                    },
                }
            ],
        },
    }


def _function(
    name: str,
    handler: str,
    events: dict[str, Any],
    options: TemplateOptions,
    env: dict[str, Any],
) -> dict[str, Any]:
    return {
        f"{name}Function": {
            "Type": "AWS::Serverless::Function",
            "DependsOn": [f"{name}LogGroup"],
            "Properties": {
                "FunctionName": _sub(f"${{AWS::StackName}}-{name.lower()}"),
                "CodeUri": options.code_uri,
                "Handler": f"cadenza.aws.{handler}",
                "Runtime": options.runtime,
                "MemorySize": options.memory,
                "Timeout": TIMEOUTS[name],
                "Role": _arn(f"{name}Role"),
                "Environment": {"Variables": env},
                "Events": events,
            },
        },
        f"{name}LogGroup": {
            "Type": "AWS::Logs::LogGroup",
            "Properties": {
                "LogGroupName": _sub(f"/aws/lambda/${{AWS::StackName}}-{name.lower()}"),
                "RetentionInDays": 30,
            },
        },
    }


def _sqs_event(queue: str, batch: int) -> dict[str, Any]:
    return {
        "Type": "SQS",
        "Properties": {
            "Queue": _arn(queue),
            "BatchSize": batch,
            "FunctionResponseTypes": ["ReportBatchItemFailures"],
        },
    }


def _bus_rules(options: TemplateOptions) -> dict[str, Any]:
    resources: dict[str, Any] = {}
    names = set()
    for n, rule in enumerate(options.rules):
        name = rule_name("", rule)
        if name in names:
            raise ConfigurationError(f"two rules named {rule.name!r}; rule names are unique")
        names.add(name)
        resources[f"BusRule{n}{''.join(c for c in name if c.isalnum())[:40]}"] = {
            "Type": "AWS::Events::Rule",
            "Properties": {
                "Description": f"cadenza rule {rule.name} ({rule.target})",
                "EventBusName": {"Ref": "EventBus"},
                "EventPattern": bus_pattern(rule),
                "State": "ENABLED" if rule.enabled else "DISABLED",
                "Targets": [{"Id": "rules-queue", "Arn": _arn("RulesQueue")}],
            },
        }
    resources["WaitersRule"] = {
        "Type": "AWS::Events::Rule",
        "Properties": {
            "Description": "every cadenza event, for runs waiting in wait_for_event",
            "EventBusName": {"Ref": "EventBus"},
            "EventPattern": WAITERS_PATTERN,
            "State": "ENABLED",
            "Targets": [{"Id": "waiters-queue", "Arn": _arn("WaitersQueue")}],
        },
    }
    return resources


def _queue_policy(queue: str, rules: list[str]) -> dict[str, Any]:
    """Only the bus's own rules may send to the queue."""
    return {
        "Type": "AWS::SQS::QueuePolicy",
        "Properties": {
            "Queues": [{"Ref": queue}],
            "PolicyDocument": {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Effect": "Allow",
                        "Principal": {"Service": "events.amazonaws.com"},
                        "Action": "sqs:SendMessage",
                        "Resource": _arn(queue),
                        "Condition": {"ArnEquals": {"aws:SourceArn": [_arn(r) for r in rules]}},
                    }
                ],
            },
        },
    }


def render_template(options: TemplateOptions) -> dict[str, Any]:
    """The SAM template (a dict, ready for ``json.dumps``) for ``options``."""
    if not options.workflows:
        raise ConfigurationError(
            "name the workflows to deploy: cadenza aws template -w MODULE:WORKFLOW"
        )
    resources: dict[str, Any] = {
        "RunTable": _table(),
        "ArtifactBucket": _bucket(),
        "EventBus": {
            "Type": "AWS::Events::EventBus",
            "Properties": {"Name": _sub("${AWS::StackName}-events")},
        },
        "DeploymentSecret": {
            "Type": "AWS::SecretsManager::Secret",
            "Properties": {
                "Description": "signs cadenza callback tokens and approval links",
                "GenerateSecretString": {"PasswordLength": 64, "ExcludePunctuation": True},
            },
        },
    }
    for name in ("Work", "Rules", "Waiters"):
        resources.update(_queue(name, TIMEOUTS["Worker" if name == "Work" else name]))
    bus_rules = _bus_rules(options)
    resources.update(bus_rules)
    rule_ids = [r for r in bus_rules if r != "WaitersRule"]
    if rule_ids:
        resources["RulesQueuePolicy"] = _queue_policy("RulesQueue", rule_ids)
    resources["WaitersQueuePolicy"] = _queue_policy("WaitersQueue", ["WaitersRule"])
    if options.sns:
        resources["NotificationTopic"] = {
            "Type": "AWS::SNS::Topic",
            "Properties": {"KmsMasterKeyId": "alias/aws/sns"},
        }

    env: dict[str, Any] = {
        "CADENZA_STORE": _sub("dynamodb://${RunTable}?region=${AWS::Region}"),
        "CADENZA_ARTIFACTS": _sub(f"s3://${{ArtifactBucket}}/{PREFIX}?region=${{AWS::Region}}"),
        "CADENZA_WORK_QUEUE_URL": {"Ref": "WorkQueue"},
        "CADENZA_EVENT_BUS": {"Ref": "EventBus"},
        "CADENZA_WORKFLOWS": ",".join(options.workflows),
        "CADENZA_SECRET": _sub("{{resolve:secretsmanager:${DeploymentSecret}:SecretString}}"),
        "CADENZA_BEDROCK_MODEL": options.models[0] if options.models else DEFAULT_MODEL,
        **options.extra_env,
    }
    if options.rules:
        env["CADENZA_RULES"] = json.dumps(
            [rule_to_json(r) for r in options.rules], separators=(",", ":")
        )
    bus_put = _statement(("events:PutEvents",), [_arn("EventBus")])
    engine = _engine_statements()
    worker = [
        *engine,
        _statement(CONSUME_ACTIONS, [_arn("WorkQueue")]),
        bus_put,
        *_bedrock_statements(options),
    ]
    worker_env = dict(env)
    if options.sns:
        worker.append(_statement(("sns:Publish",), [{"Ref": "NotificationTopic"}]))
        worker_env["CADENZA_SNS_TOPIC_ARN"] = {"Ref": "NotificationTopic"}
    roles = {
        "Worker": worker,
        "Sweeper": [*engine, bus_put],
        "Rules": [*engine, _statement(CONSUME_ACTIONS, [_arn("RulesQueue")])],
        "Waiters": [*engine, _statement(CONSUME_ACTIONS, [_arn("WaitersQueue")])],
        "Api": [*engine, bus_put],
    }
    for function, statements in roles.items():
        resources[f"{function}Role"] = _role(function, statements)
    resources.update(
        _function(
            "Worker", "worker_handler", {"Work": _sqs_event("WorkQueue", 10)}, options, worker_env
        )
    )
    resources.update(
        _function(
            "Sweeper",
            "sweeper_handler",
            {"Every": {"Type": "Schedule", "Properties": {"Schedule": options.sweep_every}}},
            options,
            env,
        )
    )
    resources.update(
        _function("Rules", "rules_handler", {"Rules": _sqs_event("RulesQueue", 10)}, options, env)
    )
    resources.update(
        _function(
            "Waiters", "waiters_handler", {"Events": _sqs_event("WaitersQueue", 10)}, options, env
        )
    )
    resources.update(_function("Api", "api_handler", {"Http": {"Type": "HttpApi"}}, options, env))
    outputs: dict[str, Any] = {
        "ApiUrl": {
            "Description": "the HTTP API (cadenza's service)",
            "Value": _sub("https://${ServerlessHttpApi}.execute-api.${AWS::Region}.amazonaws.com"),
        },
        "Store": {"Value": env["CADENZA_STORE"]},
        "Artifacts": {"Value": env["CADENZA_ARTIFACTS"]},
        "EventBus": {"Value": {"Ref": "EventBus"}},
        "WorkQueueUrl": {"Value": {"Ref": "WorkQueue"}},
    }
    if options.sns:
        outputs["NotificationTopic"] = {"Value": {"Ref": "NotificationTopic"}}
    return {
        "AWSTemplateFormatVersion": "2010-09-09",
        "Transform": "AWS::Serverless-2016-10-31",
        "Description": f"cadenza serverless shape for {', '.join(options.workflows)}",
        "Resources": resources,
        "Outputs": outputs,
    }
