"""Results pipeline: IoT rules → Firehose → S3 partitioned by plant/line/date, Glue tables for Athena

Results and review-station labels travel in the same batches; each array has its rule, stream,
prefix and table, and one rule acknowledges the batch.
"""

from __future__ import annotations

import base64
import json

import aws_cdk as cdk
from aws_cdk import aws_glue as glue
from aws_cdk import aws_iam as iam
from aws_cdk import aws_iot as iot
from aws_cdk import aws_kinesisfirehose as firehose
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from constructs import Construct, IConstruct

from inspector.messages import MAX_RESULTS_PER_BATCH
from stacks.config import PlantConfig
from stacks.constructs._nag import acknowledge_wildcard, arn_text, attr_text
from stacks.constructs.artifact_store import ACCESS_LOGS_PREFIX

RESULTS_PREFIX = "results/"
LABELS_PREFIX = "labels/"
NONCURRENT_DAYS = 30  # how long a deleted or overwritten result object stays recoverable
# The inspector publishes batches {"v": 1, "device", "first_seq", "last_seq", "results": [<result
# message v1>, ...], "labels"?: [<label message v1>, ...]} (inspector.uplink.encode_batch); a
# batch without labels has no "labels" key, a batch of labels only has "results": [].
BATCH_TOPIC = "lineguard/{plant}/+/+/+/results"
# The device's IoT policy pins topic level 5 to its own thing name (stacks/policies.py), so a
# batch whose "device" is not the publishing thing is dropped rather than stored under its name.
# "If the WHERE clause evaluates to true, the rule actions are performed. Otherwise, the rule
# actions are not performed" (AWS IoT developer guide, iot-sql-where.html).
BATCH_FILTER = "v = 1 AND device = topic(5)"


def _store_sql(array: str) -> str:
    """A storage rule's SQL: each element of the batch's ``array`` one Firehose record.

    ``get(array, 0)`` is Undefined when the array is empty or absent, or not an array
    ("If the index is outside the bounds of the Array (negative or >= array.length), the
    result is Undefined"; any other first argument gives Undefined: AWS IoT developer guide,
    iot-sql-functions.html, get and isUndefined), so the rule fires only on a batch that holds
    at least one element. It must not fire on an empty array: batch mode sends the array as one
    PutRecordBatch, whose Records take 1 to 500 entries (Firehose API reference,
    API_PutRecordBatch.html; botocore's firehose model, PutRecordBatchRequestEntryList
    min 1), so an empty one could only fail into the error action.
    """
    return (
        f"SELECT VALUE {array} FROM '{BATCH_TOPIC}' WHERE {BATCH_FILTER}"
        f" AND NOT isUndefined(get({array}, 0))"
    )


# Each batch's results, one Firehose record per result (batch mode).
RESULTS_SQL = _store_sql("results")
# Each batch's labels (docs/review-station.md), one Firehose record per label, to their own
# stream and prefix: the same message, the same filter, a rule of its own.
LABELS_SQL = _store_sql("labels")
# The cloud's acknowledgement of each batch (docs/results-ack.md): the inspector keeps a batch in
# its journal until this comes back, because through Greengrass a publish is only "spooled".
# The same BATCH_FILTER as the storage rules, and no condition on the arrays: every batch the
# rules engine takes is acknowledged, and each of its non-empty arrays was handed to the rule
# that stores it by the same evaluation of the same message (a labels-only batch included —
# left unacknowledged, the device would resend it for ever). A Firehose action that fails sends
# the message, payload included, to the rule's error action (IoT developer guide,
# rule-error-handling.html: "base64OriginalPayload").
# `1 AS labels` is the acknowledgement's capability: this stack stores labels. A stack from
# before labels acknowledged every batch and stored its results only, so a device sends labels
# only once an acknowledgement carries it (it holds them until then: inspector/uplink.py).
ACK_SQL = (
    f"SELECT v, device, first_seq, last_seq, 1 AS labels FROM '{BATCH_TOPIC}' WHERE {BATCH_FILTER}"
)
# republish-rule-action.html: the topic takes substitution templates; ${topic(5)} is the device.
ACK_TOPIC = "lineguard/{plant}/${{topic(5)}}/ack"
# In batch mode the Firehose action sends the SQL's array as one PutRecordBatch, and "the
# resulting array can't have more than 500 records" (AWS IoT developer guide,
# kinesis-firehose-rule-action.html, batchMode; IoT API reference, API_FirehoseAction.html:
# "When batchMode is true and the rule's SQL statement evaluates to an Array, each Array element
# forms one record in the PutRecordBatch request"). A device batch holds at most
# inspector.messages.MAX_RESULTS_PER_BATCH entries, results and labels together, so each of
# its arrays fits.
FIREHOSE_BATCH_MAX_RECORDS = 500
# Result message v1 (edge_component/inspector/messages.py), as Athena columns. ts stays the
# RFC 3339 text here: Athena documents `timestamp.formats` for the Hive JSON SerDe only
# (hive-json-serde.html), not for the OpenX one this table uses (openx-json-serde.html), so
# the dedup view parses it instead.
RESULT_COLUMNS: tuple[tuple[str, str], ...] = (
    ("v", "int"),
    ("plant", "string"),
    ("station", "string"),
    ("device", "string"),
    ("camera", "string"),
    ("part_id", "string"),
    ("seq", "bigint"),
    ("ts", "string"),
    ("decision", "string"),
    ("score", "double"),
    ("threshold", "double"),
    ("model", "string"),
    ("latency_ms", "double"),
    ("reason", "string"),
)
# Label message v1 (inspector.messages.LABEL_FIELDS and LABEL_OPTIONAL_FIELDS) as Athena
# columns; line is a partition key, as for results.
LABEL_COLUMNS: tuple[tuple[str, str], ...] = (
    ("v", "int"),
    ("plant", "string"),
    ("station", "string"),
    ("device", "string"),
    ("camera", "string"),
    ("part_id", "string"),
    ("seq", "bigint"),
    ("ts", "string"),
    ("label", "string"),
    ("defect_type", "string"),
    ("operator", "string"),
    ("revision", "int"),
    ("result_seq", "bigint"),
    ("decision", "string"),
    ("model", "string"),
)


DEDUP_VIEW_NAME = "results_dedup"
LABELS_DEDUP_VIEW_NAME = "labels_dedup"
LABELS_CURRENT_VIEW_NAME = "labels_current"


def view_columns(columns: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
    """A view's columns (Hive types): the table's with ts a timestamp, then its partition keys."""
    return (
        *((name, "timestamp" if name == "ts" else type_) for name, type_ in columns),
        ("line", "string"),
        ("dt", "string"),
    )


DEDUP_VIEW_COLUMNS = view_columns(RESULT_COLUMNS)
LABELS_VIEW_COLUMNS = view_columns(LABEL_COLUMNS)
# How Athena (Trino) names these types in a view definition.
_PRESTO_TYPES = {
    "string": "varchar",
    "int": "integer",
    "bigint": "bigint",
    "double": "double",
    "timestamp": "timestamp(3)",
}


def glue_database_name(plant: str) -> str:
    """Glue database of a plant's results (Glue names take no dashes)."""
    return "lineguard_" + plant.replace("-", "_")


def one_row_view_sql(
    table: str,
    columns: tuple[tuple[str, str], ...],
    *,
    partition_by: str,
    order_by: str,
) -> str:
    """Presto SQL of a view over ``table`` keeping the first row of each ``partition_by`` group.

    ``from_iso8601_timestamp`` gives ``timestamp(3) with time zone`` (trino.io docs,
    functions/datetime); the cast keeps its UTC wall time as a ``timestamp(3)``.
    """
    select = ",\n  ".join(
        "CAST(from_iso8601_timestamp(ts) AS timestamp(3)) AS ts" if name == "ts" else name
        for name, _ in columns
    )
    return (
        f"SELECT\n  {select}\nFROM (\n"
        f"  SELECT *, row_number() OVER (PARTITION BY {partition_by} ORDER BY {order_by})"
        " AS copy_number\n"
        f"  FROM {table}\n"
        ")\nWHERE copy_number = 1"
    )


def dedup_view_sql(table: str, columns: tuple[tuple[str, str], ...] = DEDUP_VIEW_COLUMNS) -> str:
    """The view's Presto SQL over ``table``: one row per (device, seq), ``ts`` a timestamp.

    A message the device sent again (after a lost acknowledgement) keeps its ``seq`` and is
    byte-identical, so its copies share line and dt too. Those are in the window's PARTITION BY
    so that a query's ``WHERE line/dt`` still prunes partitions through the view: Trino pushes a
    predicate below a window only if it uses the window's partition columns
    (trinodb/trino, PredicatePushDown.visitWindow).
    """
    return one_row_view_sql(table, columns, partition_by="device, seq, line, dt", order_by="ts")


def current_labels_sql(table: str) -> str:
    """Presto SQL of the verdict that stands per result: the highest ``revision`` per
    (device, result_seq) (docs/review-station.md). A resent copy has the same revision and
    content, so which copy is kept does not matter. A correction may come on another day than
    the verdict it replaces, so ``dt`` cannot be in the PARTITION BY: a ``WHERE dt`` on this
    view filters the verdicts that stand, it does not prune partitions.
    """
    return one_row_view_sql(
        table,
        LABELS_VIEW_COLUMNS,
        partition_by="device, result_seq",
        order_by="revision DESC, ts DESC",
    )


def presto_view_text(sql: str, *, schema: str, columns: tuple[tuple[str, str], ...]) -> str:
    """Glue ``ViewOriginalText`` of an Athena view, as Athena writes it for ``CREATE VIEW``.

    ``/* Presto View: <base64 of the JSON view definition> */``: the format Trino's Hive
    connector decodes (trinodb/trino, plugin/trino-hive/.../ViewReaderUtil.java: VIEW_PREFIX,
    VIEW_SUFFIX, PrestoViewReader), with ``originalSql``, ``catalog``, ``schema`` and
    ``columns`` as mapbox/cloudfriend's ``GluePrestoView`` shortcut writes them.
    """
    definition = {
        "originalSql": sql,
        "catalog": "awsdatacatalog",
        "schema": schema,
        "columns": [{"name": name, "type": _PRESTO_TYPES[type_]} for name, type_ in columns],
    }
    encoded = base64.b64encode(json.dumps(definition, separators=(",", ":")).encode()).decode()
    return f"/* Presto View: {encoded} */"


class ResultsPipeline(Construct):
    """Results bucket; for results and for labels a Firehose stream with dynamic partitioning,
    a topic rule, a Glue table and views; the rule that acknowledges each batch.

    Attributes:
        bucket: where results land (``results/plant=<p>/line=<l>/dt=<yyyy-mm-dd>/``) and labels
            (``labels/plant=<p>/line=<l>/dt=<yyyy-mm-dd>/``).
        delivery_stream: the results' Firehose stream.
        labels_stream: the labels' Firehose stream.
        rule: the IoT topic rule feeding results to ``delivery_stream``.
        labels_rule: the IoT topic rule feeding labels to ``labels_stream``.
        ack_rule: the IoT topic rule that acknowledges each batch to its device.
        table_name: the results' Glue table (in ``database_name``) Athena queries.
        view_name: the Athena view over it without resent copies (one row per device and seq).
        labels_table_name: the labels' Glue table.
        labels_view_name: the view of every verdict without resent copies.
        current_labels_view_name: the view of the verdict that stands per result.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        plant: PlantConfig,
        access_log_bucket: s3.IBucket,
        error_action: iot.CfnTopicRule.ActionProperty,
        log_key: kms.IKey,
    ) -> None:
        super().__init__(scope, construct_id)
        if MAX_RESULTS_PER_BATCH > FIREHOSE_BATCH_MAX_RECORDS:
            raise ValueError(
                f"inspector.messages.MAX_RESULTS_PER_BATCH: {MAX_RESULTS_PER_BATCH} results per "
                f"message, but the IoT rule's Firehose action takes at most "
                f"{FIREHOSE_BATCH_MAX_RECORDS} records per message in batch mode"
            )
        stack = cdk.Stack.of(self)
        self.bucket = s3.Bucket(
            self,
            "Bucket",
            encryption=s3.BucketEncryption.S3_MANAGED,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            enforce_ssl=True,
            # Versioned, so a deleted or overwritten result object stays recoverable for
            # NONCURRENT_DAYS; the lifecycle then removes old versions and the delete markers
            # expiry leaves behind, so versioning does not grow the bucket forever.
            versioned=True,
            lifecycle_rules=[
                s3.LifecycleRule(
                    expiration=cdk.Duration.days(plant.monitoring.results_retention_days),
                    noncurrent_version_expiration=cdk.Duration.days(NONCURRENT_DAYS),
                    abort_incomplete_multipart_upload_after=cdk.Duration.days(7),
                ),
                # S3 takes no expired-delete-marker cleanup in a rule that expires by age.
                s3.LifecycleRule(
                    id="remove-expired-delete-markers", expired_object_delete_marker=True
                ),
            ],
            removal_policy=cdk.RemovalPolicy.RETAIN,
        )
        # The access-log bucket lives in the Shared stack and accepts logs from this account.
        cfn_bucket = self.bucket.node.default_child
        assert isinstance(cfn_bucket, s3.CfnBucket)
        cfn_bucket.logging_configuration = s3.CfnBucket.LoggingConfigurationProperty(
            destination_bucket_name=access_log_bucket.bucket_name,
            log_file_prefix=f"{ACCESS_LOGS_PREFIX}results-{plant.name}/",
        )

        stream_logs = logs.LogGroup(
            self,
            "DeliveryLogs",
            log_group_name=f"/lineguard/{plant.name}/results-delivery",
            retention=logs.RetentionDays.THREE_MONTHS,
            encryption_key=log_key,
            removal_policy=cdk.RemovalPolicy.DESTROY,
        )
        stream_log_stream = logs.LogStream(self, "DeliveryLogStream", log_group=stream_logs)
        role = iam.Role(
            self,
            "DeliveryRole",
            assumed_by=iam.ServicePrincipal("firehose.amazonaws.com"),
            description=f"Firehose delivery of plant {plant.name}'s results to S3",
        )
        role.add_to_policy(
            iam.PolicyStatement(
                actions=[
                    "s3:AbortMultipartUpload",
                    "s3:GetBucketLocation",
                    "s3:ListBucket",
                    "s3:ListBucketMultipartUploads",
                    "s3:PutObject",
                    "s3:GetObject",
                ],
                resources=[
                    self.bucket.bucket_arn,
                    self.bucket.arn_for_objects(f"{RESULTS_PREFIX}*"),
                    self.bucket.arn_for_objects(f"{LABELS_PREFIX}*"),
                ],
            )
        )
        role.add_to_policy(
            iam.PolicyStatement(
                actions=["logs:PutLogEvents"],
                resources=[
                    stack.format_arn(
                        service="logs",
                        resource="log-group",
                        resource_name=f"/lineguard/{plant.name}/results-delivery:*",
                        arn_format=cdk.ArnFormat.COLON_RESOURCE_NAME,
                    )
                ],
            )
        )
        policy = role.node.find_child("DefaultPolicy")
        prefix = f"{RESULTS_PREFIX}plant={plant.name}/"
        self.delivery_stream = self._delivery_stream(
            "Stream",
            RESULTS_PREFIX,
            plant=plant,
            role=role,
            policy=policy,
            log_group=stream_logs,
            log_stream=stream_log_stream,
        )
        labels_prefix = f"{LABELS_PREFIX}plant={plant.name}/"
        self.labels_stream = self._delivery_stream(
            "LabelsStream",
            LABELS_PREFIX,
            plant=plant,
            role=role,
            policy=policy,
            log_group=stream_logs,
            log_stream=logs.LogStream(self, "LabelsDeliveryLogStream", log_group=stream_logs),
        )
        rule_role = iam.Role(
            self,
            "RuleRole",
            assumed_by=iam.ServicePrincipal("iot.amazonaws.com"),
            description=f"IoT rules of plant {plant.name}: put results and labels into Firehose",
        )
        rule_role.add_to_policy(
            iam.PolicyStatement(
                actions=["firehose:PutRecord", "firehose:PutRecordBatch"],
                resources=[self.delivery_stream.attr_arn, self.labels_stream.attr_arn],
            )
        )
        self.rule = self._store_rule(
            "Rule",
            sql=RESULTS_SQL.format(plant=plant.name),
            description=(
                f"LineGuard {plant.name}: the results of each batch (at most "
                f"{MAX_RESULTS_PER_BATCH}) to Firehose, one record each"
            ),
            stream=self.delivery_stream,
            role=rule_role,
            error_action=error_action,
        )
        self.labels_rule = self._store_rule(
            "LabelsRule",
            sql=LABELS_SQL.format(plant=plant.name),
            description=(
                f"LineGuard {plant.name}: the review station's labels of each batch to "
                "Firehose, one record each"
            ),
            stream=self.labels_stream,
            role=rule_role,
            error_action=error_action,
        )

        ack_role = iam.Role(
            self,
            "AckRole",
            assumed_by=iam.ServicePrincipal("iot.amazonaws.com"),
            description=f"IoT rule of plant {plant.name}: acknowledge result batches to devices",
        )
        ack_role.add_to_policy(
            iam.PolicyStatement(
                actions=["iot:Publish"],
                resources=[
                    stack.format_arn(
                        service="iot",
                        resource="topic",
                        resource_name=f"lineguard/{plant.name}/*/ack",
                    )
                ],
            )
        )
        acknowledge_wildcard(
            ack_role,
            arn_text(ack_role, "iot", f"topic/lineguard/{plant.name}/*/ack"),
            "Publishes the acknowledgement of each device on its own "
            f"lineguard/{plant.name}/<device>/ack topic; devices are not CloudFormation resources.",
        )
        self.ack_rule = iot.CfnTopicRule(
            self,
            "AckRule",
            topic_rule_payload=iot.CfnTopicRule.TopicRulePayloadProperty(
                description=(
                    f"LineGuard {plant.name}: acknowledge each batch of results and labels "
                    "(first_seq..last_seq) to the device that sent it"
                ),
                sql=ACK_SQL.format(plant=plant.name),
                aws_iot_sql_version="2016-03-23",
                rule_disabled=False,
                actions=[
                    iot.CfnTopicRule.ActionProperty(
                        republish=iot.CfnTopicRule.RepublishActionProperty(
                            topic=ACK_TOPIC.format(plant=plant.name),
                            role_arn=ack_role.role_arn,
                            qos=1,
                        )
                    )
                ],
                error_action=error_action,
            ),
        )

        # Glue table over the partitioned objects; partition projection, so no crawler.
        self.database_name = glue_database_name(plant.name)
        database = glue.CfnDatabase(
            self,
            "Database",
            catalog_id=plant.account,
            database_input=glue.CfnDatabase.DatabaseInputProperty(
                name=self.database_name,
                description=f"LineGuard results of plant {plant.name}",
            ),
        )
        self.table_name = "results"
        table = self._table(
            "Table",
            plant=plant,
            name=self.table_name,
            description="Result messages v1, one row per inspected part",
            location=f"s3://{self.bucket.bucket_name}/{prefix}",
            columns=RESULT_COLUMNS,
            database=database,
        )
        self.view_name = DEDUP_VIEW_NAME
        self._view(
            "DedupView",
            plant=plant,
            name=self.view_name,
            sql=dedup_view_sql(self.table_name),
            columns=DEDUP_VIEW_COLUMNS,
            table=table,
        )
        self.labels_table_name = "labels"
        labels_table = self._table(
            "LabelsTable",
            plant=plant,
            name=self.labels_table_name,
            description="Label messages v1, one row per verdict given at a review station",
            location=f"s3://{self.bucket.bucket_name}/{labels_prefix}",
            columns=LABEL_COLUMNS,
            database=database,
        )
        self.labels_view_name = LABELS_DEDUP_VIEW_NAME
        self._view(
            "LabelsDedupView",
            plant=plant,
            name=self.labels_view_name,
            sql=dedup_view_sql(self.labels_table_name, LABELS_VIEW_COLUMNS),
            columns=LABELS_VIEW_COLUMNS,
            table=labels_table,
        )
        self.current_labels_view_name = LABELS_CURRENT_VIEW_NAME
        self._view(
            "LabelsCurrentView",
            plant=plant,
            name=self.current_labels_view_name,
            sql=current_labels_sql(self.labels_table_name),
            columns=LABELS_VIEW_COLUMNS,
            table=labels_table,
        )
        acknowledge_wildcard(
            role,
            f"{attr_text(cfn_bucket, 'Arn')}/{RESULTS_PREFIX}*",
            "Firehose writes objects it names at delivery time, only under results/ of this "
            "plant's results bucket.",
        )
        acknowledge_wildcard(
            role,
            f"{attr_text(cfn_bucket, 'Arn')}/{LABELS_PREFIX}*",
            "Firehose writes objects it names at delivery time, only under labels/ of this "
            "plant's results bucket.",
        )
        acknowledge_wildcard(
            role,
            arn_text(role, "logs", f"log-group:/lineguard/{plant.name}/results-delivery:*"),
            "Firehose writes delivery errors to the streams of its own log group only.",
        )

    def _delivery_stream(
        self,
        construct_id: str,
        kind_prefix: str,
        *,
        plant: PlantConfig,
        role: iam.Role,
        policy: IConstruct,
        log_group: logs.LogGroup,
        log_stream: logs.LogStream,
    ) -> firehose.CfnDeliveryStream:
        """A Firehose stream writing one JSON line per record under ``kind_prefix``, partitioned
        by plant, line and date (the records' ``line`` and ``ts``; results and labels both
        carry them)."""
        prefix = f"{kind_prefix}plant={plant.name}/"
        stream = firehose.CfnDeliveryStream(
            self,
            construct_id,
            delivery_stream_type="DirectPut",
            delivery_stream_encryption_configuration_input=firehose.CfnDeliveryStream.DeliveryStreamEncryptionConfigurationInputProperty(
                key_type="AWS_OWNED_CMK"
            ),
            extended_s3_destination_configuration=firehose.CfnDeliveryStream.ExtendedS3DestinationConfigurationProperty(
                bucket_arn=self.bucket.bucket_arn,
                role_arn=role.role_arn,
                prefix=prefix
                + "line=!{partitionKeyFromQuery:line}/dt=!{partitionKeyFromQuery:dt}/",
                error_output_prefix=f"{kind_prefix}errors/!{{firehose:error-output-type}}/dt=!{{timestamp:yyyy-MM-dd}}/",
                buffering_hints=firehose.CfnDeliveryStream.BufferingHintsProperty(
                    interval_in_seconds=300, size_in_m_bs=64
                ),
                compression_format="GZIP",
                dynamic_partitioning_configuration=firehose.CfnDeliveryStream.DynamicPartitioningConfigurationProperty(
                    enabled=True,
                    retry_options=firehose.CfnDeliveryStream.RetryOptionsProperty(
                        duration_in_seconds=300
                    ),
                ),
                processing_configuration=firehose.CfnDeliveryStream.ProcessingConfigurationProperty(
                    enabled=True,
                    processors=[
                        firehose.CfnDeliveryStream.ProcessorProperty(
                            type="MetadataExtraction",
                            parameters=[
                                firehose.CfnDeliveryStream.ProcessorParameterProperty(
                                    parameter_name="MetadataExtractionQuery",
                                    parameter_value="{line:.line,dt:.ts[0:10]}",
                                ),
                                firehose.CfnDeliveryStream.ProcessorParameterProperty(
                                    parameter_name="JsonParsingEngine", parameter_value="JQ-1.6"
                                ),
                            ],
                        ),
                        # Firehose "concatenates data without any delimiters" by default
                        # (Firehose developer guide, basic-deliver.html); this processor puts
                        # a newline after each record (dynamic-partitioning-new-line-delimiter:
                        # "add a new line delimiter between records in objects that are
                        # delivered to Amazon S3"), so every record is one JSON line. The rule
                        # adds no separator of its own: with both, every record is followed by
                        # an empty line, which the OpenX JSON reader turns into a row of nulls
                        # (trinodb/trino, lib/trino-hive-formats/.../openxjson/README.md).
                        firehose.CfnDeliveryStream.ProcessorProperty(
                            type="AppendDelimiterToRecord",
                            parameters=[
                                firehose.CfnDeliveryStream.ProcessorParameterProperty(
                                    parameter_name="Delimiter", parameter_value="\\n"
                                )
                            ],
                        ),
                    ],
                ),
                cloud_watch_logging_options=firehose.CfnDeliveryStream.CloudWatchLoggingOptionsProperty(
                    enabled=True,
                    log_group_name=log_group.log_group_name,
                    log_stream_name=log_stream.log_stream_name,
                ),
            ),
        )
        # Firehose checks its S3 access at creation: create the role's policy first.
        stream.node.add_dependency(policy)
        return stream

    def _store_rule(
        self,
        construct_id: str,
        *,
        sql: str,
        description: str,
        stream: firehose.CfnDeliveryStream,
        role: iam.Role,
        error_action: iot.CfnTopicRule.ActionProperty,
    ) -> iot.CfnTopicRule:
        """A topic rule sending the array its SQL selects to ``stream``, one record each."""
        return iot.CfnTopicRule(
            self,
            construct_id,
            topic_rule_payload=iot.CfnTopicRule.TopicRulePayloadProperty(
                description=description,
                sql=sql,
                aws_iot_sql_version="2016-03-23",
                rule_disabled=False,
                actions=[
                    iot.CfnTopicRule.ActionProperty(
                        firehose=iot.CfnTopicRule.FirehoseActionProperty(
                            delivery_stream_name=stream.ref,
                            role_arn=role.role_arn,
                            batch_mode=True,
                            # no separator: Firehose appends the newline (see its processors)
                        )
                    )
                ],
                error_action=error_action,
            ),
        )

    def _table(
        self,
        construct_id: str,
        *,
        plant: PlantConfig,
        name: str,
        description: str,
        location: str,
        columns: tuple[tuple[str, str], ...],
        database: glue.CfnDatabase,
    ) -> glue.CfnTable:
        """A Glue table over partitioned JSON lines; partition projection, so no crawler."""
        table = glue.CfnTable(
            self,
            construct_id,
            catalog_id=plant.account,
            database_name=self.database_name,
            table_input=glue.CfnTable.TableInputProperty(
                name=name,
                description=description,
                table_type="EXTERNAL_TABLE",
                parameters={
                    "classification": "json",
                    "compressionType": "gzip",
                    "projection.enabled": "true",
                    "projection.line.type": "enum",
                    "projection.line.values": ",".join(line.name for line in plant.lines),
                    "projection.dt.type": "date",
                    "projection.dt.format": "yyyy-MM-dd",
                    "projection.dt.range": "2026-01-01,NOW",
                    "projection.dt.interval": "1",
                    "projection.dt.interval.unit": "DAYS",
                    "storage.location.template": location + "line=${line}/dt=${dt}/",
                },
                partition_keys=[
                    glue.CfnTable.ColumnProperty(name="line", type="string"),
                    glue.CfnTable.ColumnProperty(name="dt", type="string"),
                ],
                storage_descriptor=glue.CfnTable.StorageDescriptorProperty(
                    location=location,
                    input_format="org.apache.hadoop.mapred.TextInputFormat",
                    output_format="org.apache.hadoop.hive.ql.io.HiveIgnoreKeyTextOutputFormat",
                    serde_info=glue.CfnTable.SerdeInfoProperty(
                        serialization_library="org.openx.data.jsonserde.JsonSerDe",
                        parameters={"ignore.malformed.json": "true"},
                    ),
                    columns=[glue.CfnTable.ColumnProperty(name=n, type=t) for n, t in columns],
                ),
            ),
        )
        table.add_resource_dependency(database)
        return table

    def _view(
        self,
        construct_id: str,
        *,
        plant: PlantConfig,
        name: str,
        sql: str,
        columns: tuple[tuple[str, str], ...],
        table: glue.CfnTable,
    ) -> glue.CfnTable:
        """An Athena view, as a Glue table of type VIRTUAL_VIEW.

        Athena reads it as its own view when presto_view is "true" and the comment is "Presto
        View" (trinodb/trino ViewReaderUtil.isTrinoView; mapbox/cloudfriend
        lib/shortcuts/glue-presto-view.js writes the same parameters and expanded text). No Glue
        description: it would replace that comment (trinodb/trino, metastore/glue/
        GlueConverter.fromGlueTable), and Trino writes none for its own views.
        """
        view = glue.CfnTable(
            self,
            construct_id,
            catalog_id=plant.account,
            database_name=self.database_name,
            table_input=glue.CfnTable.TableInputProperty(
                name=name,
                table_type="VIRTUAL_VIEW",
                parameters={"presto_view": "true", "comment": "Presto View"},
                view_original_text=presto_view_text(
                    sql, schema=self.database_name, columns=columns
                ),
                view_expanded_text="/* Presto View */",
                # SerDe info present though empty: Trino reads no Glue table without one
                # (GlueConverter.fromGlueStorage: "StorageDescriptor SerDeInfo is null").
                storage_descriptor=glue.CfnTable.StorageDescriptorProperty(
                    columns=[glue.CfnTable.ColumnProperty(name=n, type=t) for n, t in columns],
                    location="",
                    serde_info=glue.CfnTable.SerdeInfoProperty(),
                ),
            ),
        )
        view.add_resource_dependency(table)
        return view
