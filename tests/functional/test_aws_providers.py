"""CodeCommit resolution and provider tokens from SSM / Secrets Manager, against moto and Stubber."""

from __future__ import annotations

from typing import Any

import boto3
import pytest
from botocore.stub import Stubber
from moto import mock_aws

from binderless.errors import ProviderUnavailable, RefNotFound, SpecNotAllowed
from binderless.providers import ProviderRegistry
from binderless.providers.codecommit import CodeCommitProvider
from binderless.settings import Settings
from binderless.tokens import load_secrets

SHA = "0123456789abcdef0123456789abcdef01234567"


def stubbed(region: str = "eu-west-1") -> tuple[Any, Stubber]:
    client = boto3.client("codecommit", region_name=region)
    return client, Stubber(client)


def test_codecommit_branch_and_head() -> None:
    client, stub = stubbed()
    stub.add_response("get_branch", {"branch": {"branchName": "main", "commitId": SHA}},
                      {"repositoryName": "analysis", "branchName": "main"})
    stub.add_response("get_repository", {"repositoryMetadata": {"defaultBranch": "dev"}},
                      {"repositoryName": "analysis"})
    stub.add_response("get_branch", {"branch": {"branchName": "dev", "commitId": SHA}},
                      {"repositoryName": "analysis", "branchName": "dev"})
    provider = CodeCommitProvider(lambda region: client)
    with stub:
        repo = provider.resolve("eu-west-1/analysis/main")
        assert repo.resolved_ref == SHA
        assert repo.clone_url == "https://git-codecommit.eu-west-1.amazonaws.com/v1/repos/analysis"
        assert repo.persistent_request == f"v2/codecommit/eu-west-1/analysis/{SHA}"
        assert provider.resolve("eu-west-1/analysis/HEAD").resolved_ref == SHA
    stub.assert_no_pending_responses()


@pytest.mark.parametrize(("code", "error"), [
    ("RepositoryDoesNotExistException", RefNotFound),
    ("BranchDoesNotExistException", RefNotFound),
    ("AccessDeniedException", SpecNotAllowed),
    ("ThrottlingException", ProviderUnavailable),
])
def test_codecommit_errors(code: str, error: type[Exception]) -> None:
    client, stub = stubbed()
    stub.add_client_error("get_branch", service_error_code=code, http_status_code=400)
    with stub, pytest.raises(error):
        CodeCommitProvider(lambda region: client).resolve("eu-west-1/analysis/main")


def test_codecommit_repository_lookup_against_moto() -> None:
    with mock_aws():
        client = boto3.client("codecommit", region_name="us-east-1")
        client.create_repository(repositoryName="analysis")
        provider = CodeCommitProvider(lambda region: boto3.client("codecommit", region_name=region))
        with pytest.raises(RefNotFound):
            provider.resolve("us-east-1/missing-repo/HEAD")  # get_repository: moto has it


def test_codecommit_refused_in_local_mode_without_an_aws_client() -> None:
    registry = ProviderRegistry(Settings(mode="local"), client=None)  # type: ignore[arg-type]
    with pytest.raises(SpecNotAllowed, match="only by a binderless running on AWS"):
        registry.resolve("codecommit", "eu-west-1/analysis/main")


def test_tokens_from_ssm_and_secrets_manager() -> None:
    with mock_aws():
        boto3.client("ssm", region_name="us-east-1").put_parameter(
            Name="/binderless/github", Value="ghp_from_ssm", Type="SecureString")
        boto3.client("secretsmanager", region_name="us-east-1").create_secret(
            Name="binderless/gitlab", SecretString="glpat_from_sm")
        settings = Settings(mode="aws", github_token="ssm:/binderless/github",
                            gitlab_token="secretsmanager:binderless/gitlab")
        loaded = load_secrets(settings, lambda service: boto3.client(service, region_name="us-east-1"))
        assert loaded.github_token == "ghp_from_ssm"
        assert loaded.gitlab_token == "glpat_from_sm"
        assert "ghp_from_ssm" not in repr(loaded)
        with pytest.raises(ValueError, match="github_token: could not read ssm:/nope"):
            load_secrets(Settings(mode="aws", github_token="ssm:/nope"),
                         lambda service: boto3.client(service, region_name="us-east-1"))


def test_local_mode_refuses_secret_references() -> None:
    with pytest.raises(ValueError, match="only the AWS mode reads"):
        load_secrets(Settings(github_token="ssm:/x"), None)
    plain = Settings(github_token="ghp_plain")
    assert load_secrets(plain, None) is plain
