"""Duty cost-cleanup: policies as data (`policy`), resources that declare their lifecycle (`resources`,
`aws`, `kube`), the mark -> grace -> act decisions (`lifecycle`), account guards (`guards`), prices
(`prices`), the audit log (`audit`) and the report (`report`)."""
