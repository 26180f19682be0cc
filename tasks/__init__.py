"""Each duty's tasks live in its own package (`tasks/<duty>/`): plain functions that take clients and
data and return data, and thin `@task` wrappers over them. `tasks/common/` holds only what two or more
duties really share. Nothing here imports a flow or the command line."""
