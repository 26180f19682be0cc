"""Operations around the duties: the alert bridge (Alertmanager/Grafana -> Prefect events) and backfills."""
