"""Task lists: `/api/v1/lists`. A task's `list_id` names one of its owner's lists."""
