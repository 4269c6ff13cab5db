/** Filters by sensor type (check boxes) and district (a select); every change re-filters. */

import { districtsOf } from "./districts";
import { SENSOR_TYPES, type Sensor } from "./types";

export type Visible = (sensor: Sensor) => boolean;

export function buildFilters(sensors: Sensor[], onChange: (visible: Visible) => void): void {
  const types = document.querySelector<HTMLFieldSetElement>("#type-filter")!;
  const district = document.querySelector<HTMLSelectElement>("#district-filter")!;
  for (const type of SENSOR_TYPES) {
    const label = types.appendChild(document.createElement("label"));
    const box = label.appendChild(document.createElement("input"));
    box.type = "checkbox";
    box.name = "sensor-type";
    box.value = type;
    box.checked = true;
    label.append(` ${type}`);
  }
  for (const name of districtsOf(sensors)) {
    district.add(new Option(name, name));
  }
  const changed = () => {
    const shownTypes = new Set(
      [...types.querySelectorAll<HTMLInputElement>("input:checked")].map((box) => box.value),
    );
    const shownDistrict = district.value;
    onChange(
      (sensor) =>
        shownTypes.has(sensor.sensor_type) &&
        (shownDistrict === "" || sensor.district === shownDistrict),
    );
  };
  types.addEventListener("change", changed);
  district.addEventListener("change", changed);
}
