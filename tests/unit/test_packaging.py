"""What a person sees when ``chalice package`` fails (deploy, --estimate, --dry-run)."""

from __future__ import annotations

from binderless.packaging import _why_packaging_failed


def test_a_failed_chalice_package_is_a_short_message() -> None:
    offline = ("Traceback (most recent call last):\n  File ...\n"
               "chalice.deploy.packager.NoSuchPackageError: Could not satisfy the requirement: "
               "aws-lambda-powertools>=3\n")
    message = _why_packaging_failed(offline)
    assert "aws-lambda-powertools>=3" in message and "network connection" in message
    assert "Traceback" not in message
    assert _why_packaging_failed("Error: something else\n") == \
        "chalice package failed: Error: something else"
