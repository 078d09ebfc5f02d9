// useLiveTable for Preact: import { useLiveTable } from "@plank-db/client/preact".
import { useEffect, useState } from "preact/hooks";
import { makeUseLiveTable } from "./hooks.js";

export const useLiveTable = makeUseLiveTable({ useState, useEffect });
