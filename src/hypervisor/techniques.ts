// The technique table: every mode the "mode" config key accepts, one line each. A new mode is its
// own module exporting a TechniqueModule, plus its line here.
import { nativeTechnique } from "./native.js";
import { pvTechnique } from "./pv.js";
import { shadowTechnique } from "./shadow.js";
import { eptTechnique, nptTechnique } from "./tdp.js";
import type { TechniqueModule } from "./technique.js";

export const TECHNIQUES = {
  native: nativeTechnique,
  ept: eptTechnique,
  npt: nptTechnique,
  shadow: shadowTechnique,
  pv: pvTechnique,
} satisfies Record<string, TechniqueModule>;

export type Mode = keyof typeof TECHNIQUES;
export const MODES = Object.keys(TECHNIQUES) as Mode[];
