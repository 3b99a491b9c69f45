"""AWS backends: one small typed adapter per service, each taking an injected boto3 client.

Nothing here is imported by the local mode, which creates no AWS client.
"""
