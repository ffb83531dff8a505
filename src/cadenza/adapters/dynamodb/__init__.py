"""The run store on DynamoDB (``dynamodb://TABLE``): the serverless shape's store.

Needs the ``aws`` extra (boto3), imported when a store is first used.
"""

from cadenza.adapters.dynamodb._store import DynamoDbRunStore

__all__ = ["DynamoDbRunStore"]
