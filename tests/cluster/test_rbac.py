"""RBAC is enforced: a ServiceAccount token is authenticated, then authorized only by bindings."""

from __future__ import annotations

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from support.controlplane import ControlPlane
from support.kube import token_client, wait_for

pytestmark = pytest.mark.cluster


def _list_config_maps(api: client.ApiClient, namespace: str) -> int:
    """The HTTP status of listing ConfigMaps in `namespace`."""
    try:
        client.CoreV1Api(api).list_namespaced_config_map(namespace)
    except ApiException as error:
        return int(error.status)
    return 200


def test_service_account_is_allowed_only_after_a_role_binding(
    control_plane: ControlPlane, kube: client.ApiClient, namespace: str
) -> None:
    core = client.CoreV1Api(kube)
    core.create_namespaced_service_account(
        namespace, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name="reader"))
    )
    # No token Secrets are created for ServiceAccounts any more; tokens come from TokenRequest.
    token = core.create_namespaced_service_account_token(
        "reader",
        namespace,
        client.AuthenticationV1TokenRequest(
            spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=600)
        ),
    ).status.token

    with token_client(control_plane, token) as as_reader:
        review = client.AuthenticationV1Api(as_reader).create_self_subject_review(
            client.V1SelfSubjectReview()
        )
        assert review.status.user_info.username == f"system:serviceaccount:{namespace}:reader"
        assert _list_config_maps(as_reader, namespace) == 403

        rbac = client.RbacAuthorizationV1Api(kube)
        rbac.create_namespaced_role(
            namespace,
            client.V1Role(
                metadata=client.V1ObjectMeta(name="configmap-reader"),
                rules=[
                    client.V1PolicyRule(
                        api_groups=[""], resources=["configmaps"], verbs=["get", "list", "watch"]
                    )
                ],
            ),
        )
        rbac.create_namespaced_role_binding(
            namespace,
            client.V1RoleBinding(
                metadata=client.V1ObjectMeta(name="reader-reads-configmaps"),
                role_ref=client.V1RoleRef(
                    api_group="rbac.authorization.k8s.io", kind="Role", name="configmap-reader"
                ),
                subjects=[
                    client.RbacV1Subject(kind="ServiceAccount", name="reader", namespace=namespace)
                ],
            ),
        )

        # The RBAC authorizer learns of new bindings through a watch: allow a moment.
        wait_for(
            lambda: _list_config_maps(as_reader, namespace) == 200,
            timeout=10,
            what="the RoleBinding to take effect",
        )
        # The binding is namespaced: elsewhere the answer is still no.
        assert _list_config_maps(as_reader, "default") == 403
