"""A workflow for the CLI tests that rules start from events."""

from __future__ import annotations

from pydantic import BaseModel

from cadenza import Context, workflow


class Signup(BaseModel):
    name: str
    plan: str


async def welcome(signup: Signup) -> str:
    return f"welcome {signup.name}, enjoy {signup.plan}"


@workflow(name="cli-welcome")
async def greet(ctx: Context, signup: Signup) -> str:
    return str(await ctx.step(welcome, signup))
