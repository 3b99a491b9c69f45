"""Deploy binderless into an AWS account: package, plan, execute (``binderless deploy``)."""
