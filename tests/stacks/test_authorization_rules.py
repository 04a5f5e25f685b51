"""The evaluation rules of ``stacks.authorization``, each against the example in AWS's docs."""

from __future__ import annotations

from typing import Any

import pytest

from stacks.authorization import (
    Decision,
    Request,
    UnsupportedPolicy,
    evaluate_iam,
    evaluate_iot,
    https_context,
    mqtt_context,
    render_provisioning_value,
)

IOT = "arn:aws:iot:us-east-1:123456789012"


def policy(*statements: dict[str, Any]) -> dict[str, Any]:
    return {"Version": "2012-10-17", "Statement": list(statements)}


def allow(action: str, *resources: str, **extra: Any) -> dict[str, Any]:
    return {"Effect": "Allow", "Action": action, "Resource": list(resources), **extra}


def iot(action: str, resource: str, client: str = "c1", thing: str | None = None) -> Request:
    return Request(action, f"{IOT}:{resource}", mqtt_context(client, thing))


def test_plus_in_a_policy_is_a_literal_character() -> None:
    # pub-sub-policy.md "Registered devices (4)": only the string some/+/topic matches.
    p = [policy(allow("iot:Subscribe", f"{IOT}:topicfilter/some/+/topic"))]
    assert evaluate_iot(p, iot("iot:Subscribe", "topicfilter/some/+/topic")).allowed
    assert not evaluate_iot(p, iot("iot:Subscribe", "topicfilter/some/x/topic")).allowed


def test_hash_in_a_policy_is_a_literal_character() -> None:
    p = [policy(allow("iot:Subscribe", f"{IOT}:topicfilter/a/#"))]
    assert evaluate_iot(p, iot("iot:Subscribe", "topicfilter/a/#")).allowed
    assert not evaluate_iot(p, iot("iot:Subscribe", "topicfilter/a/b")).allowed


def test_star_matches_any_characters_across_topic_levels() -> None:
    # pub-sub-policy.md: "* is not confined to a single topic level as + is".
    p = [policy(allow("iot:Publish", f"{IOT}:topic/some/*/topic"))]
    assert evaluate_iot(p, iot("iot:Publish", "topic/some/a/b/c/topic")).allowed
    assert evaluate_iot(p, iot("iot:Publish", "topic/some//topic")).allowed
    assert not evaluate_iot(p, iot("iot:Publish", "topic/other/a/topic")).allowed


def test_question_mark_matches_exactly_one_character() -> None:
    p = [policy(allow("iot:Publish", f"{IOT}:topic/some/sensor???/topic"))]
    assert evaluate_iot(p, iot("iot:Publish", "topic/some/sensor123/topic")).allowed
    assert not evaluate_iot(p, iot("iot:Publish", "topic/some/sensor12/topic")).allowed


def test_default_is_deny_and_an_explicit_deny_wins() -> None:
    p = [
        policy(allow("iot:Publish", f"{IOT}:topic/a/*")),
        policy({"Effect": "Deny", "Action": "iot:Publish", "Resource": f"{IOT}:topic/a/secret"}),
    ]
    assert evaluate_iot(p, iot("iot:Publish", "topic/a/open")) is Decision.ALLOW
    assert evaluate_iot(p, iot("iot:Publish", "topic/a/secret")) is Decision.EXPLICIT_DENY
    assert evaluate_iot(p, iot("iot:Publish", "topic/b")) is Decision.IMPLICIT_DENY
    assert evaluate_iot(p, iot("iot:Receive", "topic/a/open")) is Decision.IMPLICIT_DENY


def test_thing_name_variable_resolves_only_when_the_client_id_is_the_thing_name() -> None:
    # thing-policy-variables.md: the client id must exactly match the thing name.
    p = [policy(allow("iot:Connect", f"{IOT}:client/${{iot:Connection.Thing.ThingName}}*"))]
    assert evaluate_iot(p, iot("iot:Connect", "client/dev1", "dev1", "dev1")).allowed
    # a core device's second connection: the variable has no value, nothing is allowed
    assert not evaluate_iot(p, iot("iot:Connect", "client/dev1#2", "dev1#2", "dev1")).allowed
    assert not evaluate_iot(p, iot("iot:Connect", "client/dev1", "dev1", None)).allowed


def test_a_substituted_wildcard_is_taken_as_a_wildcard() -> None:
    # The docs leave it open; the evaluator takes the reading that allows more, so a check that
    # a call is denied holds either way.
    p = [policy(allow("iot:Publish", f"{IOT}:topic/${{iot:ClientId}}/data"))]
    assert evaluate_iot(p, iot("iot:Publish", "topic/*/data", "*")).allowed
    assert evaluate_iot(p, iot("iot:Publish", "topic/other/data", "*")).allowed
    assert not evaluate_iot(p, iot("iot:Publish", "topic/other/data", "c1")).allowed


def test_core_devices_get_no_thing_variables() -> None:
    # Greengrass developer guide, device-auth: not supported for core devices.
    p = [policy(allow("iot:Connect", f"{IOT}:client/${{iot:Connection.Thing.ThingName}}"))]
    request = Request(
        "iot:Connect", f"{IOT}:client/dev1", mqtt_context("dev1", "dev1", core_device=True)
    )
    assert not evaluate_iot(p, request).allowed


def test_https_calls_have_no_client_id() -> None:
    p = [policy(allow("iot:GetThingShadow", f"{IOT}:thing/${{iot:ClientId}}"))]
    request = Request("iot:GetThingShadow", f"{IOT}:thing/dev1", https_context())
    assert not evaluate_iot(p, request).allowed


def test_a_decision_cannot_be_used_as_a_truth_value() -> None:
    # `assert evaluate_iot(...)` would pass for a deny: force `.allowed`.
    with pytest.raises(TypeError, match="allowed"):
        bool(Decision.IMPLICIT_DENY)


def test_is_attached_condition() -> None:
    statement = allow(
        "iot:Connect",
        f"{IOT}:client/*",
        Condition={"Bool": {"iot:Connection.Thing.IsAttached": "true"}},
    )
    p = [policy(statement)]
    assert evaluate_iot(p, iot("iot:Connect", "client/dev1", "dev1", "dev1")).allowed
    assert not evaluate_iot(p, iot("iot:Connect", "client/x", "x", None)).allowed


def test_what_is_not_modelled_refuses_to_decide() -> None:
    odd = allow("iot:Connect", f"{IOT}:client/*", Condition={"NumericLessThan": {"k": "1"}})
    with pytest.raises(UnsupportedPolicy):
        evaluate_iot([policy(odd)], iot("iot:Connect", "client/a"))
    with pytest.raises(UnsupportedPolicy):
        evaluate_iot(
            [policy({"Effect": "Allow", "NotAction": "iot:Connect", "Resource": "*"})],
            iot("iot:Publish", "topic/a"),
        )
    unresolved_deny = {"Effect": "Deny", "Action": "iot:*", "Resource": "${iot:Unknown}"}
    with pytest.raises(UnsupportedPolicy):
        evaluate_iot([policy(unresolved_deny)], iot("iot:Publish", "topic/a"))


def test_actions_are_case_insensitive_and_may_use_wildcards() -> None:
    p = [policy(allow("iot:publish", f"{IOT}:topic/a"), allow("s3:Get*", "*"))]
    assert evaluate_iot(p, iot("iot:Publish", "topic/a")).allowed
    assert evaluate_iam(p, Request("s3:GetObject", "arn:aws:s3:::b/k")).allowed


def test_iam_wildcards_that_end_a_segment_may_cross_colons() -> None:
    # IAM reference_policies_elements_resource, "Using wildcards in resource ARNs".
    p = [policy(allow("logs:PutLogEvents", "arn:aws:logs:eu-west-1:1:log-group:/aws/greengrass/*"))]
    stream = "arn:aws:logs:eu-west-1:1:log-group:/aws/greengrass/Comp:log-stream:s1"
    assert evaluate_iam(p, Request("logs:PutLogEvents", stream)).allowed
    mid = [policy(allow("s3:GetObject", "arn:aws:s3:::b?c/k"))]
    assert evaluate_iam(mid, Request("s3:GetObject", "arn:aws:s3:::bxc/k")).allowed


def test_iam_refuses_to_decide_what_the_docs_leave_open() -> None:
    # A * inside a segment against a value with a colon there: allowed on one reading only.
    region = [policy(allow("logs:PutLogEvents", "arn:aws:logs:eu-*-1:1:log-group:g"))]
    with pytest.raises(UnsupportedPolicy, match="ARN segment"):
        evaluate_iam(region, Request("logs:PutLogEvents", "arn:aws:logs:eu-west:x-1:1:log-group:g"))


def test_string_like_conditions_match_across_colons_and_keys_ignore_case() -> None:
    statement = allow(
        "s3:GetObject",
        "*",
        Condition={"StringLike": {"AWS:SourceArn": "arn:aws:iot:*:1:rolealias/*"}},
    )
    request = Request(
        "s3:GetObject",
        "arn:aws:s3:::b/k",
        {"aws:SourceArn": "arn:aws:iot:eu-west-1:1:rolealias/a"},
    )
    assert evaluate_iam([policy(statement)], request).allowed


def test_iam_credentials_variable_from_the_credentials_provider() -> None:
    p = [policy(allow("s3:PutObject", "arn:aws:s3:::b/samples/${credentials-iot:ThingName}/*"))]
    own = Request(
        "s3:PutObject", "arn:aws:s3:::b/samples/t1/x", {"credentials-iot:ThingName": "t1"}
    )
    other = Request(
        "s3:PutObject", "arn:aws:s3:::b/samples/t2/x", {"credentials-iot:ThingName": "t1"}
    )
    assert evaluate_iam(p, own).allowed
    assert not evaluate_iam(p, other).allowed
    assert not evaluate_iam(p, Request("s3:PutObject", "arn:aws:s3:::b/samples/t1/x")).allowed


def test_provisioning_template_ref_and_join() -> None:
    value = {"Fn::Join": ["-", ["a", {"Ref": "P"}, "c"]]}
    assert render_provisioning_value(value, {"P": "b"}) == "a-b-c"
    with pytest.raises(UnsupportedPolicy):
        render_provisioning_value({"Ref": "Missing"}, {})
    with pytest.raises(UnsupportedPolicy):
        render_provisioning_value({"Fn::Sub": "x"}, {})
