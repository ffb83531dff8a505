"""The AWS serverless shape: EventBridge, SQS, Lambda, SNS and Bedrock around the
DynamoDB run store and the S3 artifact store.

- events: :class:`EventBridgePublisher` and :func:`relay_to_eventbridge` publish the
  outbox to a bus; :func:`deploy_rules` / :func:`bus_pattern` put cadenza rules on it;
- Lambda handlers (``cadenza.aws.worker_handler`` and the others, see ``_lambda``) and
  their cores for tests and other runtimes (:func:`handle_work`, :func:`sweep`);
- :class:`SnsNotifier` for approvals and escalations;
- :class:`BedrockAgent` (an existing agent as a role) and :class:`BedrockKnowledgeBase`
  (the read side of the knowledge pattern);
- :func:`render_template`: the SAM template ``cadenza aws template`` writes.

Needs the ``aws`` extra (boto3, Mangum); boto3 is imported when a client is first made.
See docs/aws.md.
"""

from cadenza.aws._bedrock_agents import (
    DEFAULT_MODEL,
    BedrockAgent,
    BedrockKnowledgeBase,
    default_model,
    session_id,
)
from cadenza.aws._delivery import apply_rules, resume_waiters
from cadenza.aws._eventbridge import (
    EventBridgePublisher,
    PublishReport,
    bus_entry,
    bus_pattern,
    deploy_rules,
    deploy_waiter_rule,
    event_from_bus,
    relay_to_eventbridge,
)
from cadenza.aws._lambda import (
    api_app,
    api_handler,
    handle_deliveries,
    rules_handler,
    runtime_from_environment,
    sweeper_handler,
    use_runtime,
    waiters_handler,
    worker_handler,
)
from cadenza.aws._sns import SnsNotifier
from cadenza.aws._work import (
    AwsRuntime,
    SqsWorkQueue,
    SweepReport,
    WorkReport,
    due_run_ids,
    handle_work,
    sweep,
)

__all__ = [
    "DEFAULT_MODEL",
    "AwsRuntime",
    "BedrockAgent",
    "BedrockKnowledgeBase",
    "EventBridgePublisher",
    "PublishReport",
    "SnsNotifier",
    "SqsWorkQueue",
    "SweepReport",
    "WorkReport",
    "api_app",
    "api_handler",
    "apply_rules",
    "bus_entry",
    "bus_pattern",
    "default_model",
    "deploy_rules",
    "deploy_waiter_rule",
    "due_run_ids",
    "event_from_bus",
    "handle_deliveries",
    "handle_work",
    "relay_to_eventbridge",
    "resume_waiters",
    "rules_handler",
    "runtime_from_environment",
    "session_id",
    "sweep",
    "sweeper_handler",
    "use_runtime",
    "waiters_handler",
    "worker_handler",
]
