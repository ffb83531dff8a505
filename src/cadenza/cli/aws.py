"""``cadenza aws …``: the serverless shape's SAM template, and deploying it.

cadenza aws template -w cadenza.examples.research_report:research_report -o template.yaml
cadenza aws deploy --stack-name research --guided
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import click

from cadenza.cli._common import console, fail, literal
from cadenza.errors import CadenzaError, ConfigurationError, InvalidInput
from cadenza.ports.run_store import Rule
from cadenza.workflow import load


@click.group("aws")
def aws_group() -> None:
    """Deploy workflows to AWS: DynamoDB, S3, EventBridge, SQS, Lambda, SNS, Bedrock."""


def _rules(path: str | None) -> list[Rule]:
    from cadenza.aws._rules import rule_from_json

    if path is None:
        return []
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InvalidInput(f"--rules {path}: not a readable JSON file ({exc})") from exc
    if not isinstance(data, list):
        raise InvalidInput(f"--rules {path}: expected a JSON list of rules")
    try:
        return [rule_from_json(r) for r in data]
    except (KeyError, TypeError) as exc:
        raise InvalidInput(
            f"--rules {path}: each rule needs name, pattern, target (and params): {exc}"
        ) from exc


@aws_group.command("template")
@click.option(
    "-w",
    "--workflow",
    "workflows",
    multiple=True,
    required=True,
    help="MODULE:WORKFLOW to deploy; repeat. Every function imports them.",
)
@click.option("--rules", "rules_file", help="A JSON file of cadenza rules to put on the bus.")
@click.option("--sns", is_flag=True, help="Create an SNS topic the workflows notify through.")
@click.option(
    "--bedrock-model",
    "models",
    multiple=True,
    help="Bedrock model or inference profile id the workflows call (the first is the"
    " default model); repeat. Default: us.amazon.nova-lite-v1:0.",
)
@click.option("--bedrock-agent", "agents", multiple=True, help="Agent alias ARN to invoke.")
@click.option("--knowledge-base", "kbs", multiple=True, help="Bedrock knowledge base id.")
@click.option("--code-uri", default=".", show_default=True, help="The package's source folder.")
@click.option("-o", "--output", default="template.yaml", show_default=True)
def template_command(
    workflows: tuple[str, ...],
    rules_file: str | None,
    sns: bool,
    models: tuple[str, ...],
    agents: tuple[str, ...],
    kbs: tuple[str, ...],
    code_uri: str,
    output: str,
) -> None:
    """Write the SAM template for the workflows named with -w."""
    from cadenza.aws._bedrock_agents import DEFAULT_MODEL
    from cadenza.aws._template import TemplateOptions, render_template
    from cadenza.events.relay import validate_rule

    try:
        for ref in workflows:
            if ":" not in ref:
                raise ConfigurationError(f"-w {ref!r}: name a workflow as MODULE:WORKFLOW")
            load(ref)  # a typo fails here, not in the deployed functions
        rules = _rules(rules_file)
        for rule in rules:
            validate_rule(rule)
        options = TemplateOptions(
            workflows=workflows,
            rules=rules,
            sns=sns,
            models=models or (DEFAULT_MODEL,),
            agents=agents,
            knowledge_bases=kbs,
            code_uri=code_uri,
        )
        text = json.dumps(render_template(options), indent=2) + "\n"
    except CadenzaError as exc:
        fail(exc)
    Path(output).write_text(text, encoding="utf-8")
    console.print(
        f"wrote {literal(output)}: {len(workflows)} workflow(s), {len(rules)} rule(s);"
        f" deploy it with 'cadenza aws deploy -t {literal(output)}' (or 'sam deploy')"
    )


@aws_group.command(
    "deploy", context_settings={"ignore_unknown_options": True, "allow_extra_args": True}
)
@click.option("-t", "--template", "template", default="template.yaml", show_default=True)
@click.option("--stack-name", help="The CloudFormation stack (sam asks when --guided).")
@click.option("--guided", is_flag=True, help="Let sam ask for the stack's settings.")
@click.argument("sam_args", nargs=-1, type=click.UNPROCESSED)
def deploy_command(
    template: str, stack_name: str | None, guided: bool, sam_args: tuple[str, ...]
) -> None:
    """Build and deploy the template with the SAM CLI (arguments after -- go to sam)."""
    sam = shutil.which("sam")
    if sam is None:
        fail(
            ConfigurationError(
                "the AWS SAM CLI ('sam') is not installed or not on PATH; install it"
                " (https://docs.aws.amazon.com/serverless-application-model/latest/"
                "developerguide/install-sam-cli.html), or deploy the template with"
                " 'aws cloudformation package' and 'aws cloudformation deploy'"
            )
        )
    if not Path(template).is_file():
        fail(
            ConfigurationError(
                f"no template at {template}; write it first with 'cadenza aws template -w"
                " MODULE:WORKFLOW'"
            )
        )
    build = [sam, "build", "--template-file", template]
    deploy = [sam, "deploy", "--capabilities", "CAPABILITY_IAM", "CAPABILITY_AUTO_EXPAND"]
    if stack_name:
        deploy += ["--stack-name", stack_name]
    # --guided asks where to upload the code; otherwise sam makes a bucket for it.
    deploy.append("--guided" if guided else "--resolve-s3")
    for command in (build, [*deploy, *sam_args]):
        console.print(f"$ {literal(' '.join(command))}")
        code = subprocess.call(command)
        if code != 0:
            raise SystemExit(code)


def register(cli: click.Group) -> None:
    """Add ``aws`` to the ``cadenza`` command."""
    cli.add_command(aws_group)
