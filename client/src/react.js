// useLiveTable for React: import { useLiveTable } from "@plank-db/client/react".
import { useEffect, useState } from "react";
import { makeUseLiveTable } from "./hooks.js";

export const useLiveTable = makeUseLiveTable({ useState, useEffect });
