"""Monthly prices per region and resource type, from the table shipped beside this module
(`prices.json`, with its date and source) or the file in SCALEOPS_COST__PRICES."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SHIPPED = Path(__file__).with_name("prices.json")


@dataclass(frozen=True)
class PriceTable:
    date: str
    source: str
    default_region: str
    regions: dict[str, dict[str, float]] = field(default_factory=dict)
    kubernetes: dict[str, float] = field(default_factory=dict)

    def aws(self, region: str, key: str) -> float:
        """USD per month (per GiB-month for storage keys); unknown region: the default region's price;
        unknown key: 0 (the report then under-states, never invents, a saving)."""
        table = self.regions.get(region) or self.regions.get(self.default_region, {})
        return float(table.get(key, self.regions.get(self.default_region, {}).get(key, 0.0)))

    def pv_gib_month(self) -> float:
        return float(self.kubernetes.get("pv_gib_month", 0.0))


def load_prices(path: Path | str | None = None) -> PriceTable:
    data: dict[str, Any] = json.loads(Path(path or SHIPPED).read_text())
    return PriceTable(
        date=str(data.get("date", "")),
        source=str(data.get("source", "")),
        default_region=str(data.get("default_region", "us-east-1")),
        regions={r: {k: float(v) for k, v in t.items()} for r, t in data.get("regions", {}).items()},
        kubernetes={k: float(v) for k, v in data.get("kubernetes", {}).items()},
    )
